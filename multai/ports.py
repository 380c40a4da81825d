"""Free TCP ports for processes that are started later and bind them themselves."""

import socket
import threading
from collections.abc import Iterable

# Ports already handed out by this process. The kernel may return a port from bind(0) again as soon as its
# probe socket closes, long before the child it was meant for binds it; without this set, one mesh in a
# hundred got the same port twice (a service's gRPC port equal to another's metrics port).
_handed_out: set[int] = set()
_lock = threading.Lock()


def reserve(ports: Iterable[int]) -> None:
    """Marks ports that are spoken for elsewhere (e.g. given in the settings), so free_port skips them."""
    with _lock:
        _handed_out.update(ports)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now and that this process has not handed out before."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port

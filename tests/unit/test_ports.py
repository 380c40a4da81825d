"""free_port: a port handed out once is never handed out again by the same process."""

import socket

from multai.ports import free_port, reserve


def test_a_thousand_free_ports_are_all_different() -> None:
    # bind(0) alone repeats a port within a few hundred calls once its probe socket closes (birthday odds
    # over the ~28,000 ephemeral ports), which made two children of one mesh get the same port.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_a_reserved_port_is_not_handed_out() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        spoken_for = probe.getsockname()[1]
    reserve([spoken_for])
    assert spoken_for not in {free_port() for _ in range(1000)}

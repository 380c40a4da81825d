"""A throwaway PostgreSQL cluster for tests: initdb and pg_ctl in a temporary folder, on a free port.

Where PostgreSQL is not installed the tests that need it skip, saying so, except under
MULTAI_REQUIRE_POSTGRES=1, where they fail: `.ci/run` installs Debian's `postgresql` package and sets it, so
that CI never skips them. PostgreSQL refuses to run as root, so under root the cluster runs as the `postgres`
user that the package creates.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from multai.ports import free_port

SKIP_REASON = "PostgreSQL tests skipped: pg_ctl not found (`.ci/run` installs Debian's postgresql package)"


def _program(name: str) -> str | None:
    found = shutil.which(name)
    if found is not None:
        return found
    # Debian keeps the server's programs off PATH, in a folder per major version.
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Starts a cluster and yields its SQLAlchemy URL; skips the test when PostgreSQL is not installed."""
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if initdb is None or pg_ctl is None:
        if os.environ.get("MULTAI_REQUIRE_POSTGRES") == "1":
            pytest.fail(SKIP_REASON.replace("skipped", "cannot run") + ", and MULTAI_REQUIRE_POSTGRES=1")
        pytest.skip(SKIP_REASON)
    folder = Path(tempfile.mkdtemp(prefix="multai-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "multai", "--auth=trust", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg://multai@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(folder, ignore_errors=True)

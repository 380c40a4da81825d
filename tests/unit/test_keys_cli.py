"""`multai keys` as real subprocesses against a state folder under tmp_path."""

import os
import subprocess
import sys
from pathlib import Path

from multai.api_keys import KeyStore, UsageDelta, find_key
from multai.settings import MultaiSettings
from multai.state_db import database_url, open_engine


def multai_keys(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MULTAI_STATE_DIR": str(state_dir)}
    env.pop("MULTAI_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "multai.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_list_usage_revoke(tmp_path: Path) -> None:
    created = multai_keys(
        tmp_path, "create", "ci", "--models", "gpt-*", "smollm2-*", "--max-priority", "normal", "--rpm", "60"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("sk-multai-") and "\n" not in secret
    assert "cannot be shown again" in created.stderr

    engine = open_engine(database_url(MultaiSettings(state_dir=tmp_path)))
    try:
        store = KeyStore(engine)
        key = find_key(store.active(), secret)
        assert key is not None and key.name == "ci"
        assert (key.models, key.max_priority, key.rpm, key.tpm) == (("gpt-*", "smollm2-*"), 1, 60, None)
        store.add_usage({"ci": UsageDelta(requests=3, prompt_tokens=120, completion_tokens=45, images=1)})
    finally:
        engine.dispose()

    listing = multai_keys(tmp_path, "list")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["NAME", "PREFIX", "MODELS", "TIER", "RPM", "TPM", "CONCURRENCY", "CREATED"]
    assert row.split()[:7] == ["ci", secret[:14] + "…", "gpt-*,smollm2-*", "normal", "60", "-", "-"]
    assert secret not in listing.stdout

    usage = multai_keys(tmp_path, "usage", "ci")
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.splitlines()[1].split() == ["ci", "3", "120", "45", "0.0", "1"]

    revoked = multai_keys(tmp_path, "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    assert multai_keys(tmp_path, "list").stdout.splitlines()[1].endswith("(revoked)")


def test_refusals_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    unknown = multai_keys(tmp_path, "revoke", "nobody")
    assert unknown.returncode != 0 and "nobody" in unknown.stderr
    bad_name = multai_keys(tmp_path, "create", "a b")
    assert bad_name.returncode != 0 and "key name" in bad_name.stderr and bad_name.stdout == ""
    # --state-dir wins over MULTAI_STATE_DIR.
    other = tmp_path / "other"
    assert multai_keys(tmp_path, "create", "ci", "--state-dir", str(other)).returncode == 0
    assert (other / "multai.db").is_file()
    missing = multai_keys(tmp_path, "usage", "ci")
    assert missing.returncode != 0 and "ci" in missing.stderr

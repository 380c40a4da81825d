"""KeyStore on a real SQLite file: hashed storage, lookup, globs, tiers, usage totals, WAL."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from multai.api_keys import KeyStore, KeyUsage, UsageDelta, UsageRecorder, digest, find_key
from multai.settings import MultaiSettings
from multai.state_db import database_url, open_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(database_url(MultaiSettings(state_dir=tmp_path / "state")))
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> KeyStore:
    return KeyStore(engine)


def test_database_url_defaults_to_sqlite_in_a_created_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "a" / "b"
    assert database_url(MultaiSettings(state_dir=state_dir)) == f"sqlite:///{state_dir}/multai.db"
    assert state_dir.is_dir()
    given = "postgresql+psycopg://u@db/multai"
    assert database_url(MultaiSettings(state_dir=state_dir, database_url=given)) == given


def test_sqlite_runs_in_wal_mode(engine: Engine, tmp_path: Path) -> None:
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    assert (tmp_path / "state" / "multai.db").is_file()


def test_create_list_revoke(store: KeyStore) -> None:
    key, secret = store.create("ci", models=["gpt-*"], max_priority=1, rpm=10, tpm=1000, concurrency=2)
    assert secret.startswith("sk-multai-") and len(secret) == len("sk-multai-") + 43
    assert key.prefix == secret[:14] + "…"
    assert (key.models, key.max_priority, key.rpm, key.tpm, key.concurrency) == (("gpt-*",), 1, 10, 1000, 2)
    other, _ = store.create("batch")
    assert (other.models, other.rpm, other.tpm, other.concurrency) == ((), None, None, None)
    assert [k.name for k in store.list()] == ["ci", "batch"]
    assert store.list()[0].created_at.tzinfo is not None

    assert store.revoke("ci") is True
    assert store.revoke("ci") is False
    assert store.revoke("nobody") is False
    assert [(k.name, k.revoked) for k in store.list()] == [("ci", True), ("batch", False)]
    assert [k.name for k in store.active().values()] == ["batch"]


def test_names_are_checked_and_never_reused(store: KeyStore) -> None:
    store.create("ci")
    with pytest.raises(ValueError, match="active key"):
        store.create("ci")
    store.revoke("ci")
    with pytest.raises(ValueError, match="revoked key"):
        store.create("ci")
    for name in ("", "a b", "x" * 65, "ünï"):
        with pytest.raises(ValueError, match="key name"):
            store.create(name)
    with pytest.raises(ValueError, match="rpm"):
        store.create("zero", rpm=0)
    with pytest.raises(ValueError, match="max_priority"):
        store.create("tier", max_priority=3)
    assert [k.name for k in store.list()] == ["ci"]


def test_secret_is_stored_only_as_its_digest(store: KeyStore, tmp_path: Path, engine: Engine) -> None:
    _, secret = store.create("ci")
    engine.dispose()
    stored = b"".join(path.read_bytes() for path in (tmp_path / "state").iterdir())
    assert digest(secret).encode() in stored
    assert secret.encode() not in stored
    assert secret[len("sk-multai-") :].encode() not in stored


def test_find_key_accepts_only_active_secrets(store: KeyStore) -> None:
    key, secret = store.create("ci")
    _, revoked_secret = store.create("old")
    store.revoke("old")
    active = store.active()
    found = find_key(active, secret)
    assert found is not None and found.name == "ci" and found == key
    assert find_key(active, revoked_secret) is None
    assert find_key(active, secret + "x") is None
    assert find_key(active, "") is None
    # An entry filed under a digest that is not its key's own must not match.
    assert find_key({digest("forged"): key}, "forged") is None


def test_model_globs_match_ids_and_aliases_case_sensitively(store: KeyStore) -> None:
    key, _ = store.create("chat-only", models=["smollm2-*", "gpt-4o*"])
    assert key.allows_model(["smollm2-135m-instruct"])
    assert key.allows_model(["qwen2.5-0.5b", "gpt-4o-mini"])
    assert not key.allows_model(["whisper-tiny", "whisper-1"])
    assert not key.allows_model(["SmolLM2-135M"])
    assert not key.allows_model([])
    everything, _ = store.create("all")
    assert everything.allows_model(["whisper-tiny"])


def test_priority_tiers_allow_their_level_and_less_urgent_ones(store: KeyStore) -> None:
    normal, _ = store.create("normal", max_priority=1)
    assert [normal.allows_priority(level) for level in (0, 1, 2, 3)] == [False, True, True, False]
    urgent, _ = store.create("urgent", max_priority=0)
    assert [urgent.allows_priority(level) for level in (-1, 0, 1, 2)] == [False, True, True, True]


def test_usage_adds_up_across_flushes(store: KeyStore) -> None:
    store.create("ci")
    store.create("idle")
    recorder = UsageRecorder()
    recorder.record("ci", UsageDelta(requests=1, prompt_tokens=10, completion_tokens=5))
    recorder.record("ci", UsageDelta(requests=1, audio_seconds=2.5))
    recorder.flush(store)
    recorder.flush(store)  # nothing pending: writes nothing
    recorder.record("ci", UsageDelta(requests=1, images=2, prompt_tokens=1))
    recorder.flush(store)
    assert store.usage("ci") == [KeyUsage("ci", 3, 11, 5, 2.5, 2)]
    assert store.usage() == [KeyUsage("ci", 3, 11, 5, 2.5, 2), KeyUsage("idle", 0, 0, 0, 0.0, 0)]
    assert store.usage("nobody") == []


def test_add_usage_is_one_transaction(store: KeyStore) -> None:
    store.create("ci")
    recorder = UsageRecorder()
    recorder.record("ci", UsageDelta(requests=1))
    # No key of that name: the foreign key fails the write, which must neither count ci's request nor
    # lose it from the recorder.
    recorder.record("ghost", UsageDelta(requests=1))
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        recorder.flush(store)
    assert store.usage("ci") == [KeyUsage("ci", 0, 0, 0, 0.0, 0)]
    store.create("ghost")
    recorder.flush(store)
    assert [u.requests for u in store.usage()] == [1, 1]


def test_usage_delta_adds_fieldwise() -> None:
    total = UsageDelta(1, 2, 3, 0.5, 4) + UsageDelta(10, 20, 30, 1.0, 40)
    assert total == UsageDelta(11, 22, 33, 1.5, 44)

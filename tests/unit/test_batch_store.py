"""BatchStore on SQLite and on a throwaway PostgreSQL: validation, claims with leases, results written once,
the output and error files, cancel and expiry."""

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from multai.batch_store import MAX_ATTEMPTS, BatchStore, ClaimedItem, output_line, parse_input
from multai.openai.batches import COMPLETION_WINDOW_SECONDS, BatchCreateRequest
from multai.state_db import open_engine
from tests.postgres import throwaway_postgres

LEASE = 30.0
RETENTION = 3600


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = open_engine(f"sqlite:///{tmp_path / 'state.db'}")
    else:
        engine = open_engine(request.getfixturevalue("postgres_url"))
    yield engine
    if request.param == "postgresql":
        # Each test starts from empty tables on the module's one cluster.
        with engine.begin() as connection:
            connection.exec_driver_sql("TRUNCATE batch_items, batches, files CASCADE")
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, tmp_path: Path, clock: Clock) -> BatchStore:
    return BatchStore(engine, tmp_path / "files", RETENTION, clock)


def chat_line(custom_id: str, model: str = "smollm2-135m-instruct") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": custom_id}], "max_tokens": 2}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def upload(store: BatchStore, text: str, owner: str | None = None) -> str:
    staged = store.staging_path()
    staged.write_text(text)
    return store.add_file(owner, "batch", "input.jsonl", staged, None).id


def started_batch(store: BatchStore, text: str, owner: str | None = None) -> str:
    request = BatchCreateRequest(
        input_file_id=upload(store, text, owner), endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = store.create_batch(owner, request)
    assert store.validate_pending() == 1
    return batch.id


def answer(store: BatchStore, item: ClaimedItem) -> bool:
    return store.record(item, output_line(item.request_id, item.custom_id, 200, {"ok": True}), False, 3, 1)


def lines_of(store: BatchStore, file_id: str | None) -> list[dict[str, object]]:
    assert file_id is not None
    path = store.file_path(None, file_id)
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_bad_line_is_an_error_line_but_a_file_that_is_not_jsonl_fails() -> None:
    lines, errors = parse_input(
        "\n".join(
            [chat_line("a"), "{not json", '{"custom_id": "b", "method": "GET"}', "", chat_line("c")]
        ).encode()
    )
    assert not errors
    assert [(p.line, p.custom_id, p.refusal and p.refusal[0]) for p in lines] == [
        (1, "a", None),
        (2, None, "invalid_json_line"),
        (3, "b", "invalid_value"),
        (5, "c", None),
    ]
    _, errors = parse_input(b"id,prompt\n1,hello\n")
    assert [(e.code, e.line) for e in errors] == [("invalid_json_line", 1), ("invalid_json_line", 2)]
    assert parse_input(b"\n\n")[1][0].code == "empty_file"
    assert parse_input((chat_line("a") + "\n" + chat_line("a")).encode())[1][0].code == "duplicate_custom_id"
    assert parse_input(b"\xff\xfe")[1][0].code == "invalid_json_line"


def test_a_batch_runs_to_completed_with_each_line_once_in_line_order(store: BatchStore) -> None:
    batch_id = started_batch(store, "\n".join([chat_line("a"), "nope", chat_line("b"), chat_line("c")]))
    batch = store.get_batch(None, batch_id)
    assert batch is not None and batch.status == "in_progress" and batch.in_progress_at is not None
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 0, "failed": 1}
    assert store.has_claimable()
    claimed = store.claim(10, None, LEASE)
    assert [item.custom_id for item in claimed] == ["a", "b", "c"]
    assert store.claim(10, None, LEASE) == [] and not store.has_claimable()
    for item in reversed(claimed):
        assert answer(store, item)
    assert not answer(store, claimed[0])  # written once
    assert store.finalize_ready() == [batch_id]
    batch = store.get_batch(None, batch_id)
    assert batch is not None and batch.status == "completed"
    assert batch.finalizing_at is not None and batch.completed_at is not None
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 3, "failed": 1}
    assert (batch.usage.input_tokens, batch.usage.output_tokens, batch.usage.total_tokens) == (9, 3, 12)
    assert [line["custom_id"] for line in lines_of(store, batch.output_file_id)] == ["a", "b", "c"]
    [error] = lines_of(store, batch.error_file_id)
    assert error["response"] is None and error["error"] == {
        "code": "invalid_json_line",
        "message": "This line is not parseable as valid JSON.",
    }
    output = store.get_file(None, batch.output_file_id or "")
    assert output is not None and output.purpose == "batch_output"


def test_a_line_whose_worker_died_is_claimed_again_and_only_the_new_claim_writes(
    store: BatchStore, clock: Clock
) -> None:
    started_batch(store, chat_line("a"))
    [first] = store.claim(1, None, LEASE)
    clock.now += LEASE / 2
    store.renew([first.token], LEASE)
    clock.now += LEASE - 1
    assert store.claim(1, None, LEASE) == []  # renewed: still held
    clock.now += 2
    [second] = store.claim(1, None, LEASE)
    assert (second.custom_id, second.attempts) == ("a", 2)
    assert not answer(store, first)  # the dead worker's late answer is refused
    assert answer(store, second)


def test_a_line_that_keeps_killing_its_worker_is_given_up(store: BatchStore, clock: Clock) -> None:
    batch_id = started_batch(store, chat_line("a"))
    for _ in range(MAX_ATTEMPTS):
        assert store.claim(1, None, LEASE)
        clock.now += LEASE + 1
    assert store.claim(1, None, LEASE) == []
    assert store.finalize_ready() == [batch_id]
    batch = store.get_batch(None, batch_id)
    assert batch is not None and batch.error_file_id is not None
    [line] = lines_of(store, batch.error_file_id)
    assert isinstance(line["error"], dict) and line["error"]["code"] == "request_failed"


def test_claims_filter_by_model_and_two_workers_never_share_a_line(store: BatchStore) -> None:
    started_batch(store, "\n".join(chat_line(f"{i}", "m1" if i % 2 else "m2") for i in range(40)))
    assert {item.model for item in store.claim(5, ["m1"], LEASE)} == {"m1"}
    taken: list[str] = []

    def worker() -> None:
        while batch := store.claim(3, None, LEASE):
            taken.extend(item.custom_id or "" for item in batch)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == len(set(taken)) == 35


def test_cancel_waits_for_the_lines_in_flight_and_keeps_what_finished(store: BatchStore) -> None:
    batch_id = started_batch(store, "\n".join(chat_line(f"{i}") for i in range(5)))
    done, running = store.claim(2, None, LEASE)
    answer(store, done)
    cancelling = store.cancel_batch(None, batch_id)
    assert cancelling is not None and cancelling.status == "cancelling" and cancelling.cancelling_at
    assert store.claim(5, None, LEASE) == []
    assert store.finalize_ready() == []  # one line still in flight
    answer(store, running)
    assert store.finalize_ready() == [batch_id]
    batch = store.get_batch(None, batch_id)
    assert batch is not None and batch.status == "cancelled" and batch.error_file_id is None
    assert [line["custom_id"] for line in lines_of(store, batch.output_file_id)] == ["0", "1"]
    with pytest.raises(ValueError):
        store.cancel_batch(None, completed_batch(store))


def completed_batch(store: BatchStore) -> str:
    batch_id = started_batch(store, chat_line("x"))
    answer(store, store.claim(1, None, LEASE)[0])
    assert store.finalize_ready() == [batch_id]
    return batch_id


def test_a_batch_past_its_window_expires_with_the_rest_as_errors(store: BatchStore, clock: Clock) -> None:
    batch_id = started_batch(store, "\n".join(chat_line(f"{i}") for i in range(3)))
    answer(store, store.claim(1, None, LEASE)[0])
    clock.now += COMPLETION_WINDOW_SECONDS
    assert store.claim(1, None, LEASE) == []
    assert store.finalize_ready() == [batch_id]
    batch = store.get_batch(None, batch_id)
    assert batch is not None and batch.status == "expired" and batch.expired_at is not None
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 2}
    assert [line["error"]["code"] for line in lines_of(store, batch.error_file_id)] == [  # type: ignore[index]
        "batch_expired",
        "batch_expired",
    ]


def test_files_are_the_owners_and_expire_with_the_retention(store: BatchStore, clock: Clock) -> None:
    mine = upload(store, chat_line("a"), owner="alice")
    clock.now += 1
    upload(store, chat_line("b"), owner="alice")
    assert store.get_file("bob", mine) is None
    page = store.list_files("alice", None, None, 1, descending=True)
    assert page.has_more and page.data[0].id != mine
    assert store.list_files("alice", None, page.last_id, 1, descending=True).data[0].id == mine
    assert store.delete_file("alice", mine) and not store.delete_file("alice", mine)
    clock.now += RETENTION + 1
    assert store.list_files("alice", None, None, 10, descending=True).data == []
    assert store.sweep_files() == 1
    assert [path.name for path in store.files_dir.iterdir()] == []


def test_batches_page_newest_first(store: BatchStore, clock: Clock) -> None:
    ids = []
    for i in range(3):
        clock.now += 1
        ids.append(started_batch(store, chat_line(f"{i}")))
    page = store.list_batches(None, None, 2)
    assert [b.id for b in page.data] == ids[:0:-1] and page.has_more
    assert [b.id for b in store.list_batches(None, page.last_id, 2).data] == ids[:1]

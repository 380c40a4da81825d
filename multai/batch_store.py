"""The Batch API's state in the state database: files (bytes under STATE_DIR/files, metadata here), batches,
and one row per input line.

Workers claim lines with leases in the database (FOR UPDATE SKIP LOCKED where the database has it, and a
conditional UPDATE everywhere), so a line whose worker died is claimed again once its lease lapses. A line's
result (the whole output or error line) is written into its row once, by an UPDATE that holds only while the
writer's claim does; the output and error files are built from those rows, in line order, when the batch
ends. That makes every custom_id appear exactly once across them, whatever crashed in between.
"""

import builtins
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Engine,
    Float,
    ForeignKey,
    Integer,
    Select,
    String,
    Text,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from multai.openai.batches import (
    BATCH_ENDPOINTS,
    COMPLETION_WINDOW_SECONDS,
    Batch,
    BatchCreateRequest,
    BatchError,
    BatchErrors,
    BatchList,
    BatchRequestCounts,
)
from multai.openai.files import FileList, FileObject
from multai.openai.responses import ResponseUsage
from multai.state_db import Base

# OpenAI's limit on the requests of one batch.
MAX_REQUESTS = 50_000
# A line claimed this many times without a result is recorded as failed rather than claimed again, so that
# a line that brings its worker down, or keeps meeting a full queue, cannot hold its batch forever.
MAX_ATTEMPTS = 5
# How many of a file's lines validation names when none of them is a JSON object.
MAX_REPORTED_LINES = 10
NANOSECONDS = 1_000_000_000
# Batch states in which lines are still to run or being finished.
ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")


class StoredFileRow(Base):
    """One file: an upload or a batch's output; its bytes are STATE_DIR/files/<id>."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The API key's name, or None when the API runs without keys.
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_ns: Mapped[int] = mapped_column(BigInteger, index=True)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)


class BatchRow(Base):
    """One batch; request counts and token totals are raised as its lines finish."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # The scheduler's queue level of the batch's requests: 2 (background) unless an administrator chose 1.
    priority: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    # How long the output and error files live, from their creation.
    output_retention_seconds: Mapped[int] = mapped_column(BigInteger)
    created_ns: Mapped[int] = mapped_column(BigInteger, index=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    expired_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class BatchItemRow(Base):
    """One line of a batch's input file, its claim, and once finished its output or error line."""

    __tablename__ = "batch_items"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    # The line's number in the input file, from 1.
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(48))
    custom_id: Mapped[str | None] = mapped_column(String(512))
    url: Mapped[str | None] = mapped_column(String(64))
    # The request body as JSON text; None for a line that validation refused (its result is already set).
    body: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(256), index=True)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    # Unix seconds; a claim that has lapsed may be taken by any worker.
    claim_expires: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str | None] = mapped_column(Text)
    # Whether the result goes to the error file.
    failed: Mapped[bool | None] = mapped_column(Boolean)


@dataclass(frozen=True)
class ParsedLine:
    """One non-blank line of an input file: a request, or the reason it cannot be one."""

    line: int
    custom_id: str | None
    url: str | None
    # The request body as JSON text, or None when the line is refused.
    body: str | None
    model: str | None
    # (code, message) of a refused line.
    refusal: tuple[str, str] | None = None


@dataclass(frozen=True)
class ClaimedItem:
    """A line a worker holds: what to send, and the token its result must be written under."""

    batch_id: str
    line: int
    request_id: str
    custom_id: str | None
    url: str
    body: str
    model: str | None
    owner: str | None
    priority: int
    token: str
    attempts: int


@dataclass(frozen=True)
class BatchProgress:
    """One batch as `multai status` shows it."""

    id: str
    owner: str | None
    endpoint: str
    status: str
    total: int
    completed: int
    failed: int
    created_at: int


def new_request_id() -> str:
    """The id of one line's request, which its output line and the mesh's logs and leases carry."""
    return f"batch_req_{secrets.token_hex(16)}"


def output_line(request_id: str, custom_id: str | None, status_code: int, body: Any) -> str:
    """A line of an output or error file for a request that was answered (whatever its status)."""
    response = {"status_code": status_code, "request_id": request_id, "body": body}
    return json.dumps({"id": request_id, "custom_id": custom_id, "response": response, "error": None})


def error_line(request_id: str, custom_id: str | None, code: str, message: str) -> str:
    """A line of an error file for a request that never ran."""
    error = {"code": code, "message": message}
    return json.dumps({"id": request_id, "custom_id": custom_id, "response": None, "error": error})


def _line_request(number: int, text: str) -> ParsedLine | None:
    """One line read as a batch request; None when it is not a JSON object at all."""
    try:
        request = json.loads(text)
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    custom_id = request.get("custom_id")
    custom_id = custom_id if isinstance(custom_id, str) and custom_id else None
    url = request.get("url")
    body = request.get("body")
    refusal: tuple[str, str] | None = None
    if custom_id is None:
        refusal = ("missing_required_parameter", "The line has no custom_id string.")
    elif request.get("method") != "POST":
        refusal = ("invalid_value", "The line's method must be POST.")
    elif url not in BATCH_ENDPOINTS:
        refusal = ("invalid_url", f"The line's url must be one of {', '.join(BATCH_ENDPOINTS)}.")
    elif not isinstance(body, dict):
        refusal = ("missing_required_parameter", "The line has no body object.")
    if refusal is not None or not isinstance(body, dict):
        return ParsedLine(number, custom_id, None, None, None, refusal)
    model = body.get("model")
    return ParsedLine(
        number, custom_id, str(url), json.dumps(body), model if isinstance(model, str) else None
    )


def parse_input(data: bytes) -> tuple[list[ParsedLine], list[BatchError]]:
    """The requests of an input file, or the errors that fail the whole batch.

    A line that is not a request goes to the error file; the file itself fails validation when it is not
    text, holds no line, too many, or no JSON object at all (it is not JSONL), or repeats a custom_id.
    """
    try:
        text = data.decode()
    except UnicodeDecodeError:
        message = "The input file is not UTF-8 text; it must be JSONL, one request object per line."
        return [], [BatchError(code="invalid_json_line", message=message, line=1)]
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not numbered:
        return [], [BatchError(code="empty_file", message="The input file is empty.")]
    if len(numbered) > MAX_REQUESTS:
        message = f"The input file has {len(numbered)} requests; a batch holds at most {MAX_REQUESTS}."
        return [], [BatchError(code="too_many_tasks", message=message)]
    parsed: list[ParsedLine] = []
    not_json: list[int] = []
    for number, line in numbered:
        request = _line_request(number, line)
        if request is None:
            not_json.append(number)
            request = ParsedLine(
                number,
                None,
                None,
                None,
                None,
                ("invalid_json_line", "This line is not parseable as valid JSON."),
            )
        parsed.append(request)
    if len(not_json) == len(numbered):
        return [], [
            BatchError(code="invalid_json_line", message="This line is not parseable as valid JSON.", line=n)
            for n in not_json[:MAX_REPORTED_LINES]
        ]
    seen: dict[str, int] = {}
    for request in parsed:
        if request.custom_id is None:
            continue
        if request.custom_id in seen:
            message = f"The custom_id {request.custom_id!r} is also on line {seen[request.custom_id]}."
            return [], [BatchError(code="duplicate_custom_id", message=message, line=request.line)]
        seen[request.custom_id] = request.line
    return parsed, []


Row = TypeVar("Row", StoredFileRow, BatchRow)


def _derived_file_id(batch_id: str, kind: str) -> str:
    # A batch's output and error files have ids fixed by the batch, so that finalizing again after a crash
    # writes the same files instead of leaving orphans.
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


def _owned_by(column: Any, owner: str | None) -> Any:
    return column.is_(None) if owner is None else column == owner


def _page(
    query: Select[Row], table: type[Row], cursor: Row | None, descending: bool, limit: int
) -> Select[Row]:
    """One more than a page of rows by creation time (and id, between equal times) past the cursor row."""
    if cursor is not None:
        if descending:
            query = query.where(
                or_(
                    table.created_ns < cursor.created_ns,
                    and_(table.created_ns == cursor.created_ns, table.id < cursor.id),
                )
            )
        else:
            query = query.where(
                or_(
                    table.created_ns > cursor.created_ns,
                    and_(table.created_ns == cursor.created_ns, table.id > cursor.id),
                )
            )
    order = (table.created_ns.desc(), table.id.desc()) if descending else (table.created_ns, table.id)
    return query.order_by(*order).limit(limit + 1)


def _file_object(row: StoredFileRow) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.size_bytes,
        created_at=row.created_ns // NANOSECONDS,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
    )


def _batch_object(row: BatchRow) -> Batch:
    errors = BatchErrors(data=[BatchError(**error) for error in row.errors]) if row.errors else None
    return Batch(
        id=row.id,
        endpoint=row.endpoint,
        errors=errors,
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        status=row.status,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        created_at=row.created_ns // NANOSECONDS,
        in_progress_at=row.in_progress_at,
        expires_at=row.expires_at,
        finalizing_at=row.finalizing_at,
        completed_at=row.completed_at,
        failed_at=row.failed_at,
        expired_at=row.expired_at,
        cancelling_at=row.cancelling_at,
        cancelled_at=row.cancelled_at,
        request_counts=BatchRequestCounts(total=row.total, completed=row.completed, failed=row.failed),
        usage=ResponseUsage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            total_tokens=row.input_tokens + row.output_tokens,
        ),
        metadata=row.labels,
    )


def batch_progress(engine: Engine, limit: int) -> list[BatchProgress]:
    """The unfinished batches and then the latest finished ones, up to limit, for `multai status`."""
    unfinished = BatchRow.status.in_(ACTIVE_STATUSES)
    query = select(BatchRow).order_by(unfinished.desc(), BatchRow.created_ns.desc()).limit(limit)
    with Session(engine) as session:
        return [
            BatchProgress(
                row.id,
                row.owner,
                row.endpoint,
                row.status,
                row.total,
                row.completed,
                row.failed,
                row.created_ns // NANOSECONDS,
            )
            for row in session.scalars(query)
        ]


class BatchStore:
    """Files, batches and their lines; every method blocks (the bridge calls them in worker threads)."""

    def __init__(
        self,
        engine: Engine,
        files_dir: Path,
        retention_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.files_dir = files_dir
        self._retention = retention_seconds
        self._clock = clock
        files_dir.mkdir(parents=True, exist_ok=True)

    # Files.

    def staging_path(self) -> Path:
        """A fresh path in the files folder to write an upload into before add_file."""
        return self.files_dir / f".upload-{uuid.uuid4().hex}"

    def add_file(
        self, owner: str | None, purpose: str, filename: str, staged: Path, expires_after: int | None
    ) -> FileObject:
        """Stores the staged bytes as a new file (moved into place, not copied)."""
        now = self._clock()
        row = StoredFileRow(
            id=f"file-{secrets.token_hex(12)}",
            owner=owner,
            purpose=purpose,
            filename=filename[:255],
            size_bytes=staged.stat().st_size,
            created_ns=int(now * NANOSECONDS),
            expires_at=int(now) + (expires_after or self._retention),
        )
        staged.rename(self.files_dir / row.id)
        with Session(self._engine) as session, session.begin():
            session.add(row)
            return _file_object(row)

    def _live_file(self, session: Session, owner: str | None, file_id: str) -> StoredFileRow | None:
        row = session.get(StoredFileRow, file_id)
        if row is None or row.owner != owner:
            return None
        # Refused once expired, even before the sweep deletes it.
        if row.expires_at is not None and row.expires_at <= self._clock():
            return None
        return row

    def get_file(self, owner: str | None, file_id: str) -> FileObject | None:
        """The owner's file, unless it has expired."""
        with Session(self._engine) as session:
            row = self._live_file(session, owner, file_id)
            return None if row is None else _file_object(row)

    def file_path(self, owner: str | None, file_id: str) -> Path | None:
        """Where the owner's file's bytes are, unless it has expired."""
        with Session(self._engine) as session:
            row = self._live_file(session, owner, file_id)
            return None if row is None else self.files_dir / row.id

    def list_files(
        self, owner: str | None, purpose: str | None, after: str | None, limit: int, descending: bool
    ) -> FileList:
        """A page of the owner's live files by creation time; `after` is the last id of the page before."""
        query = select(StoredFileRow).where(
            _owned_by(StoredFileRow.owner, owner),
            or_(StoredFileRow.expires_at.is_(None), StoredFileRow.expires_at > int(self._clock())),
        )
        if purpose is not None:
            query = query.where(StoredFileRow.purpose == purpose)
        with Session(self._engine) as session:
            cursor = session.get(StoredFileRow, after) if after is not None else None
            rows = list(session.scalars(_page(query, StoredFileRow, cursor, descending, limit)))
        page = [_file_object(row) for row in rows[:limit]]
        return FileList(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(rows) > limit,
        )

    def delete_file(self, owner: str | None, file_id: str) -> bool:
        """Deletes the owner's file and its bytes; False when there is no such file."""
        with Session(self._engine) as session, session.begin():
            row = self._live_file(session, owner, file_id)
            if row is None:
                return False
            session.delete(row)
        (self.files_dir / file_id).unlink(missing_ok=True)
        return True

    def sweep_files(self) -> int:
        """Deletes the files past their expiry, rows and bytes; returns how many."""
        with Session(self._engine) as session, session.begin():
            expired = list(
                session.scalars(
                    select(StoredFileRow.id).where(StoredFileRow.expires_at <= int(self._clock()))
                )
            )
            for file_id in expired:
                session.delete(session.get(StoredFileRow, file_id))
        for file_id in expired:
            (self.files_dir / file_id).unlink(missing_ok=True)
        return len(expired)

    # Batches, as the API sees them.

    def create_batch(self, owner: str | None, request: BatchCreateRequest) -> Batch:
        """A new batch in `validating`. Raises LookupError when the input file is not the owner's (or has
        expired), ValueError when it was not uploaded for batches."""
        now = self._clock()
        with Session(self._engine) as session, session.begin():
            source = self._live_file(session, owner, request.input_file_id)
            if source is None:
                raise LookupError(request.input_file_id)
            if source.purpose != "batch":
                raise ValueError(f"the file's purpose is {source.purpose!r}, not 'batch'")
            after = request.output_expires_after
            row = BatchRow(
                id=f"batch_{secrets.token_hex(16)}",
                owner=owner,
                endpoint=request.endpoint,
                input_file_id=request.input_file_id,
                completion_window=request.completion_window,
                status="validating",
                priority=request.priority_level(),
                labels=request.metadata,
                output_retention_seconds=after.seconds if after is not None else self._retention,
                created_ns=int(now * NANOSECONDS),
                expires_at=int(now) + COMPLETION_WINDOW_SECONDS,
                total=0,
                completed=0,
                failed=0,
                input_tokens=0,
                output_tokens=0,
            )
            session.add(row)
            session.flush()
            return _batch_object(row)

    def get_batch(self, owner: str | None, batch_id: str) -> Batch | None:
        """The owner's batch."""
        with Session(self._engine) as session:
            row = session.get(BatchRow, batch_id)
            return None if row is None or row.owner != owner else _batch_object(row)

    def list_batches(self, owner: str | None, after: str | None, limit: int) -> BatchList:
        """A page of the owner's batches, newest first; `after` is the last id of the page before."""
        query = select(BatchRow).where(_owned_by(BatchRow.owner, owner))
        with Session(self._engine) as session:
            cursor = session.get(BatchRow, after) if after is not None else None
            rows = list(session.scalars(_page(query, BatchRow, cursor, True, limit)))
            page = [_batch_object(row) for row in rows[:limit]]
        return BatchList(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(rows) > limit,
        )

    def cancel_batch(self, owner: str | None, batch_id: str) -> Batch | None:
        """Moves the owner's batch to `cancelling` (no new line starts; it becomes `cancelled` once the lines
        in flight end). None when there is no such batch; raises ValueError when it has already ended."""
        now = int(self._clock())
        with Session(self._engine) as session, session.begin():
            row = session.get(BatchRow, batch_id)
            if row is None or row.owner != owner:
                return None
            if row.status in ("validating", "in_progress"):
                row.status, row.cancelling_at = "cancelling", now
            elif row.status not in ("cancelling", "cancelled"):
                raise ValueError(f"a batch whose status is {row.status!r} cannot be cancelled")
            session.flush()
            return _batch_object(row)

    # Batches, as the workers run them.

    def validate_pending(self) -> int:
        """Reads the input file of every batch in `validating` into its lines; returns how many batches."""
        with Session(self._engine) as session:
            pending = list(
                session.execute(
                    select(BatchRow.id, BatchRow.owner, BatchRow.input_file_id).where(
                        BatchRow.status == "validating"
                    )
                )
            )
        for batch_id, owner, file_id in pending:
            path = self.file_path(owner, file_id)
            if path is None:
                missing = BatchError(
                    code="file_not_found", message=f"The input file {file_id} no longer exists."
                )
                self._fail(batch_id, [missing])
                continue
            lines, errors = parse_input(path.read_bytes())
            if errors:
                self._fail(batch_id, errors)
            else:
                self._start(batch_id, lines)
        return len(pending)

    def _fail(self, batch_id: str, errors: Sequence[BatchError]) -> None:
        with Session(self._engine) as session, session.begin():
            session.connection().execute(
                update(BatchRow)
                .where(BatchRow.id == batch_id, BatchRow.status == "validating")
                .values(
                    status="failed",
                    failed_at=int(self._clock()),
                    errors=[error.model_dump() for error in errors],
                )
            )

    def _start(self, batch_id: str, lines: Sequence[ParsedLine]) -> None:
        rows = []
        for parsed in lines:
            request_id = new_request_id()
            result = None
            if parsed.refusal is not None:
                result = error_line(request_id, parsed.custom_id, *parsed.refusal)
            rows.append(
                {
                    "batch_id": batch_id,
                    "line": parsed.line,
                    "request_id": request_id,
                    "custom_id": parsed.custom_id,
                    "url": parsed.url,
                    "body": parsed.body,
                    "model": parsed.model,
                    "attempts": 0,
                    "result": result,
                    "failed": True if result is not None else None,
                }
            )
        refused = sum(1 for parsed in lines if parsed.refusal is not None)
        # One transaction: a crash leaves the batch in `validating` with no lines, and it is read again.
        try:
            with Session(self._engine) as session, session.begin():
                started = session.connection().execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, BatchRow.status == "validating")
                    .values(
                        status="in_progress",
                        in_progress_at=int(self._clock()),
                        total=len(rows),
                        failed=refused,
                    )
                )
                if started.rowcount == 1:
                    session.execute(insert(BatchItemRow), rows)
        except IntegrityError:
            pass  # another worker validated it first

    def _claimable(self, now: float) -> Select[str, int]:
        """The lines a worker may claim now, oldest batch and line first."""
        return (
            select(BatchItemRow.batch_id, BatchItemRow.line)
            .join(BatchRow, BatchRow.id == BatchItemRow.batch_id)
            .where(
                BatchRow.status == "in_progress",
                BatchRow.expires_at > int(now),
                BatchItemRow.result.is_(None),
                or_(BatchItemRow.claim_expires.is_(None), BatchItemRow.claim_expires < now),
            )
            .order_by(BatchRow.created_ns, BatchItemRow.line)
        )

    def has_claimable(self) -> bool:
        """Whether any line could be claimed now (a cheap check before asking the scheduler anything)."""
        with Session(self._engine) as session:
            return session.execute(self._claimable(self._clock()).limit(1)).first() is not None

    def claim(
        self, limit: int, models: Sequence[str] | None, lease_seconds: float
    ) -> builtins.list[ClaimedItem]:
        """Claims up to limit lines to run, oldest batch and line first, of the named models only when
        `models` is given. Lines of a cancelling or expired batch are never claimed."""
        now = self._clock()
        token = uuid.uuid4().hex
        free = or_(BatchItemRow.claim_expires.is_(None), BatchItemRow.claim_expires < now)
        query = self._claimable(now).limit(limit).with_for_update(skip_locked=True, of=BatchItemRow)
        if models is not None:
            query = query.where(BatchItemRow.model.in_(models))
        claimed: list[ClaimedItem] = []
        exhausted: list[tuple[ClaimedItem, str]] = []
        with Session(self._engine) as session, session.begin():
            for batch_id, line in session.execute(query).all():
                # The WHERE repeats the claim's conditions, so of two workers that chose the same line (SQLite
                # has no row locks) only one updates it.
                taken = session.connection().execute(
                    update(BatchItemRow)
                    .where(
                        BatchItemRow.batch_id == batch_id,
                        BatchItemRow.line == line,
                        BatchItemRow.result.is_(None),
                        free,
                    )
                    .values(
                        claim_token=token,
                        claim_expires=now + lease_seconds,
                        attempts=BatchItemRow.attempts + 1,
                    )
                )
                if taken.rowcount != 1:
                    continue
                item, batch = session.execute(
                    select(BatchItemRow, BatchRow)
                    .join(BatchRow, BatchRow.id == BatchItemRow.batch_id)
                    .where(BatchItemRow.batch_id == batch_id, BatchItemRow.line == line)
                ).one()
                assert item.url is not None and item.body is not None  # refused lines have a result
                held = ClaimedItem(
                    batch_id,
                    line,
                    item.request_id,
                    item.custom_id,
                    item.url,
                    item.body,
                    item.model,
                    batch.owner,
                    batch.priority,
                    token,
                    item.attempts,
                )
                if held.attempts > MAX_ATTEMPTS:
                    message = (
                        f"The request was started {MAX_ATTEMPTS} times without finishing; not tried again."
                    )
                    exhausted.append(
                        (held, error_line(held.request_id, held.custom_id, "request_failed", message))
                    )
                else:
                    claimed.append(held)
        for held, line_text in exhausted:
            self.record(held, line_text, failed=True, input_tokens=0, output_tokens=0)
        return claimed

    def renew(self, tokens: Sequence[str], lease_seconds: float) -> None:
        """Extends the claims under these tokens."""
        if not tokens:
            return
        with Session(self._engine) as session, session.begin():
            session.connection().execute(
                update(BatchItemRow)
                .where(BatchItemRow.claim_token.in_(tokens), BatchItemRow.result.is_(None))
                .values(claim_expires=self._clock() + lease_seconds)
            )

    def release(self, item: ClaimedItem, retry_after: float) -> None:
        """Gives the line back without a result, to be claimed again after retry_after seconds."""
        with Session(self._engine) as session, session.begin():
            session.connection().execute(
                update(BatchItemRow)
                .where(
                    BatchItemRow.batch_id == item.batch_id,
                    BatchItemRow.line == item.line,
                    BatchItemRow.claim_token == item.token,
                    BatchItemRow.result.is_(None),
                )
                .values(claim_expires=self._clock() + retry_after)
            )

    def record(
        self, item: ClaimedItem, result: str, failed: bool, input_tokens: int, output_tokens: int
    ) -> bool:
        """Writes the line's result if the claim still holds (False when another worker has taken the line
        since, which then writes its own), and counts it in its batch, in one transaction."""
        with Session(self._engine) as session, session.begin():
            written = session.connection().execute(
                update(BatchItemRow)
                .where(
                    BatchItemRow.batch_id == item.batch_id,
                    BatchItemRow.line == item.line,
                    BatchItemRow.claim_token == item.token,
                    BatchItemRow.result.is_(None),
                )
                .values(result=result, failed=failed, claim_token=None, claim_expires=None)
            )
            if written.rowcount != 1:
                return False
            counter = BatchRow.failed if failed else BatchRow.completed
            session.connection().execute(
                update(BatchRow)
                .where(BatchRow.id == item.batch_id)
                .values(
                    {
                        counter: counter + 1,
                        BatchRow.input_tokens: BatchRow.input_tokens + input_tokens,
                        BatchRow.output_tokens: BatchRow.output_tokens + output_tokens,
                    }
                )
            )
            return True

    def finalize_ready(self) -> builtins.list[str]:
        """Ends every batch that can end: all lines done (completed), cancelling or past its window with no
        line in flight (cancelled, expired), or left in `finalizing` by a crash. Returns their ids."""
        now = self._clock()
        with Session(self._engine) as session:
            candidates = list(
                session.execute(
                    select(
                        BatchRow.id, BatchRow.status, BatchRow.completed + BatchRow.failed >= BatchRow.total
                    ).where(
                        or_(
                            BatchRow.status.in_(("finalizing", "cancelling")),
                            and_(
                                BatchRow.status == "in_progress",
                                or_(
                                    BatchRow.completed + BatchRow.failed >= BatchRow.total,
                                    BatchRow.expires_at <= int(now),
                                ),
                            ),
                        )
                    )
                )
            )
            in_flight = {
                batch_id
                for (batch_id,) in session.execute(
                    select(BatchItemRow.batch_id)
                    .where(
                        BatchItemRow.batch_id.in_([c[0] for c in candidates]),
                        BatchItemRow.result.is_(None),
                        BatchItemRow.claim_expires > now,
                    )
                    .distinct()
                )
            }
        ended = []
        for batch_id, status, done in candidates:
            if status == "finalizing" or (status == "in_progress" and done):
                final = "completed"
            elif batch_id in in_flight:
                continue
            else:
                final = "cancelled" if status == "cancelling" else "expired"
            if self._finalize(batch_id, final):
                ended.append(batch_id)
        return ended

    def _results(self, batch_id: str, expired: bool) -> Iterator[tuple[str, bool]]:
        """Each line's result in line order; an expired batch's unfinished lines as batch_expired errors."""
        query = select(
            BatchItemRow.request_id, BatchItemRow.custom_id, BatchItemRow.result, BatchItemRow.failed
        )
        query = query.where(BatchItemRow.batch_id == batch_id).order_by(BatchItemRow.line)
        if not expired:
            query = query.where(BatchItemRow.result.is_not(None))
        message = "This request could not be executed before the completion window expired."
        with Session(self._engine) as session:
            for request_id, custom_id, result, failed in session.execute(query).yield_per(500):
                if result is None:
                    yield error_line(request_id, custom_id, "batch_expired", message), True
                else:
                    yield result, bool(failed)

    def _finalize(self, batch_id: str, final: str) -> bool:
        now = int(self._clock())
        with Session(self._engine) as session, session.begin():
            if final == "completed":
                session.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, BatchRow.status == "in_progress")
                    .values(status="finalizing", finalizing_at=now)
                )
            batch = session.get(BatchRow, batch_id)
            assert batch is not None
            owner, retention, total = batch.owner, batch.output_retention_seconds, batch.total
        output_id, error_id = _derived_file_id(batch_id, "output"), _derived_file_id(batch_id, "error")
        staged = {output_id: self.staging_path(), error_id: self.staging_path()}
        counts = {output_id: 0, error_id: 0}
        with staged[output_id].open("w") as output, staged[error_id].open("w") as errors:
            for line, failed in self._results(batch_id, final == "expired"):
                (errors if failed else output).write(line + "\n")
                counts[error_id if failed else output_id] += 1
        kept = {file_id: path for file_id, path in staged.items() if counts[file_id]}
        for file_id, path in staged.items():
            if file_id in kept:
                os.replace(path, self.files_dir / file_id)
            else:
                path.unlink()
        expected = (
            "finalizing"
            if final == "completed"
            else ("cancelling" if final == "cancelled" else "in_progress")
        )
        values: dict[str, Any] = {
            "status": final,
            f"{final}_at": now,
            "output_file_id": output_id if output_id in kept else None,
            "error_file_id": error_id if error_id in kept else None,
        }
        if final == "expired":
            values["failed"] = total - BatchRow.completed
        with Session(self._engine) as session:
            ended = session.connection().execute(
                update(BatchRow).where(BatchRow.id == batch_id, BatchRow.status == expected).values(values)
            )
            if ended.rowcount != 1:
                return False  # another worker ended it first (closing the session rolls back)
            for file_id in kept:
                session.add(
                    StoredFileRow(
                        id=file_id,
                        owner=owner,
                        purpose="batch_output",
                        filename=f"{batch_id}_{'output' if file_id == output_id else 'error'}.jsonl",
                        size_bytes=(self.files_dir / file_id).stat().st_size,
                        created_ns=int(self._clock() * NANOSECONDS),
                        expires_at=now + retention,
                    )
                )
            try:
                session.commit()
            except IntegrityError:
                return False  # another worker ended it first, with the same files
        return True

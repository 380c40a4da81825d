"""API keys of the REST API: hashed storage, per-key model globs, priority tier and limits, and usage totals.

The REST bridge caches KeyStore.active() and checks each request's bearer secret with find_key, and counts
usage with a UsageRecorder that it flushes into the store about once a second.
"""

import builtins
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Float, ForeignKey, Integer, String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from multai.openai_params import PRIORITY_NAMES
from multai.state_db import Base

SECRET_PREFIX = "sk-multai-"
# Random characters of the secret kept for display: 24 of its 256 bits, enough to tell keys apart.
DISPLAY_CHARACTERS = 4
KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ApiKeyRow(Base):
    """One API key; the secret itself is never stored, only its SHA-256 digest."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(32))
    # Globs over model ids and aliases; an empty list allows every model.
    models: Mapped[list[str]] = mapped_column(JSON)
    max_priority: Mapped[int] = mapped_column(Integer)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKeyUsageRow(Base):
    """Running usage totals of one key, raised in place by add_usage."""

    __tablename__ = "api_key_usage"

    key_name: Mapped[str] = mapped_column(ForeignKey("api_keys.name"), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    images: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class ApiKey:
    """A key as the bridge checks it: what it may use and how much, never its secret."""

    name: str
    prefix: str
    # SHA-256 hex of the secret; find_key compares it in constant time.
    digest: str
    models: tuple[str, ...]
    # 0 urgent, 1 normal, 2 background: the most urgent level the key may ask for.
    max_priority: int
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    created_at: datetime
    revoked: bool

    def allows_model(self, names: Iterable[str]) -> bool:
        """Whether any of a model's names (its id and aliases) matches one of the key's globs."""
        if not self.models:
            return True
        return any(fnmatchcase(name, glob) for name in names for glob in self.models)

    def allows_priority(self, level: int) -> bool:
        """Whether the key may ask for level: its own tier or any less urgent one."""
        return self.max_priority <= level < len(PRIORITY_NAMES)


@dataclass(frozen=True)
class UsageDelta:
    """Usage to add to a key's totals."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0
    images: int = 0

    def __add__(self, other: "UsageDelta") -> "UsageDelta":
        return UsageDelta(
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            audio_seconds=self.audio_seconds + other.audio_seconds,
            images=self.images + other.images,
        )


USAGE_COLUMNS = tuple(f.name for f in fields(UsageDelta))


@dataclass(frozen=True)
class KeyUsage:
    """A key's usage totals."""

    name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    audio_seconds: float
    images: int


def digest(secret: str) -> str:
    """The SHA-256 hex digest under which a secret is stored.

    A plain fast hash is right here: the secrets are 256 random bits, so there is nothing to guess from the
    digest, and the slow, salted hashes made for low-entropy passwords would only cost every request time.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer_secret(authorization: str) -> str:
    """The secret of an `Authorization: Bearer SECRET` header's value; empty for any other value."""
    scheme, _, secret = authorization.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def find_key(active: Mapping[str, ApiKey], secret: str) -> ApiKey | None:
    """The active key whose secret this is, in a mapping from KeyStore.active(); None for any other text."""
    wanted = digest(secret)
    key = active.get(wanted)
    # The lookup compares digests, never the secret; compare_digest keeps the final check constant-time and
    # refuses a mapping entry filed under a digest that is not the key's own.
    if key is None or not hmac.compare_digest(key.digest, wanted):
        return None
    return key


def _utc(moment: datetime) -> datetime:
    # SQLite hands back timestamps without their zone; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        name=row.name,
        prefix=row.prefix,
        digest=row.digest,
        models=tuple(row.models),
        max_priority=row.max_priority,
        rpm=row.rpm,
        tpm=row.tpm,
        concurrency=row.concurrency,
        created_at=_utc(row.created_at),
        revoked=row.revoked_at is not None,
    )


def _check_limit(label: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{label} must be at least 1, or unset for no limit; got {value}")


class KeyStore:
    """The API keys and their usage in the state database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(
        self,
        name: str,
        models: Iterable[str] = (),
        max_priority: int = 0,
        rpm: int | None = None,
        tpm: int | None = None,
        concurrency: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which exists only in this return value.

        Raises ValueError for a malformed name or limit, or a name already taken: names are never reused,
        even after a revoke, so that a name's usage totals belong to one key.
        """
        if not KEY_NAME.fullmatch(name):
            raise ValueError(f"key name {name!r} must be 1 to 64 of A-Z a-z 0-9 _ . -")
        globs = list(models)
        if not all(globs):
            raise ValueError("a model glob must not be empty")
        if not 0 <= max_priority < len(PRIORITY_NAMES):
            raise ValueError(f"max_priority must be 0 to {len(PRIORITY_NAMES) - 1}; got {max_priority}")
        _check_limit("rpm", rpm)
        _check_limit("tpm", tpm)
        _check_limit("concurrency", concurrency)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            name=name,
            digest=digest(secret),
            prefix=secret[: len(SECRET_PREFIX) + DISPLAY_CHARACTERS] + "…",
            models=globs,
            max_priority=max_priority,
            rpm=rpm,
            tpm=tpm,
            concurrency=concurrency,
            created_at=datetime.now(UTC),
        )
        with Session(self._engine) as session:
            existing = session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name))
            if existing is not None:
                state = "a revoked key" if existing.revoked_at is not None else "an active key"
                raise ValueError(f"{name!r} is already the name of {state}; names are never reused")
            session.add(row)
            try:
                session.commit()
            except IntegrityError as exc:
                # Another process created the same name between the check and the commit.
                raise ValueError(f"{name!r} is already the name of a key") from exc
            return _api_key(row), secret

    def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with Session(self._engine) as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
            return [_api_key(row) for row in rows]

    def revoke(self, name: str) -> bool:
        """Revokes the active key of that name; False when there is none."""
        with Session(self._engine) as session, session.begin():
            revoked = session.connection().execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return revoked.rowcount == 1

    def active(self) -> dict[str, ApiKey]:
        """Every unrevoked key by the digest of its secret, for find_key."""
        with Session(self._engine) as session:
            rows = session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None)))
            return {row.digest: _api_key(row) for row in rows}

    def usage(self, name: str | None = None) -> builtins.list[KeyUsage]:
        """The usage totals of every key, or of the named one (empty when there is no such key)."""
        query = (
            select(ApiKeyRow.name, ApiKeyUsageRow)
            .outerjoin(ApiKeyUsageRow, ApiKeyUsageRow.key_name == ApiKeyRow.name)
            .order_by(ApiKeyRow.id)
        )
        if name is not None:
            query = query.where(ApiKeyRow.name == name)
        with Session(self._engine) as session:
            return [
                KeyUsage(key_name, *(getattr(totals, column) for column in USAGE_COLUMNS))
                if totals is not None
                else KeyUsage(key_name, 0, 0, 0, 0.0, 0)
                for key_name, totals in session.execute(query)
            ]

    def add_usage(self, deltas: Mapping[str, UsageDelta]) -> None:
        """Adds each key's delta to its totals, all in one transaction.

        Each total is raised in the database (`col = col + delta`), so bridges writing at once add up.
        """
        with Session(self._engine) as session, session.begin():
            for name, delta in deltas.items():
                increments: dict[str, Any] = {
                    column: getattr(ApiKeyUsageRow, column) + getattr(delta, column)
                    for column in USAGE_COLUMNS
                }
                updated = session.connection().execute(
                    update(ApiKeyUsageRow).where(ApiKeyUsageRow.key_name == name).values(increments)
                )
                if updated.rowcount == 0:
                    # The key's first usage. Should another bridge insert this row first, the commit fails
                    # and the UsageRecorder keeps the delta for its next flush, whose update finds the row.
                    session.add(
                        ApiKeyUsageRow(
                            key_name=name, **{column: getattr(delta, column) for column in USAGE_COLUMNS}
                        )
                    )


class UsageRecorder:
    """Usage per key collected in memory, so that the bridge writes it once a second instead of per request.

    record() may be called from the event loop while flush() runs in a worker thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, UsageDelta] = {}

    def record(self, name: str, delta: UsageDelta) -> None:
        """Adds delta to what the next flush writes for the key."""
        with self._lock:
            self._pending[name] = self._pending.get(name, UsageDelta()) + delta

    def flush(self, store: KeyStore) -> None:
        """Writes the collected usage and forgets it; if the write fails, keeps it for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            store.add_usage(pending)
        except Exception:
            for name, delta in pending.items():
                self.record(name, delta)
            raise

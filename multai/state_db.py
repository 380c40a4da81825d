"""The mesh's state database (API keys and their usage, the Batch API's files and batches): SQLite by
default, any SQLAlchemy URL such as PostgreSQL by MULTAI_DATABASE_URL, through the same portable code."""

import importlib

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry

from multai.settings import MultaiSettings

# Modules whose tables live on Base. They import Base from here, so open_engine imports them by name when it
# runs instead of at the top, which would be circular; a new table module adds its name.
TABLE_MODULES = ("multai.api_keys", "multai.batch_store")
# Long enough for the bridge's once-a-second usage write and a `multai keys` command to wait for each other.
SQLITE_BUSY_TIMEOUT_MS = 5000


class Base(DeclarativeBase):
    """The declarative base of every table in the state database, so that one create_all makes them all."""


def database_url(settings: MultaiSettings) -> str:
    """The URL in effect: settings.database_url, else a SQLite file in the state folder (created here)."""
    if settings.database_url:
        return settings.database_url
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.state_dir / 'multai.db'}"


def _configure_sqlite(connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets the bridge read keys while another process writes; busy_timeout makes a writer wait for the
    # lock instead of failing at once; SQLite enforces foreign keys only when asked, PostgreSQL always does.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(url: str) -> Engine:
    """An engine for the state database at url, with every table of the project created if missing."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    for module in TABLE_MODULES:
        importlib.import_module(module)
    Base.metadata.create_all(engine)
    return engine

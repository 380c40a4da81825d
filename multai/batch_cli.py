"""The batches section of `multai status`: each batch's progress, from the state database."""

from datetime import UTC, datetime

from multai.batch_store import batch_progress
from multai.settings import MultaiSettings
from multai.state_db import database_url, open_engine

# Unfinished batches first, then the latest finished ones, up to this many rows.
SHOWN_BATCHES = 20


def format_batches(settings: MultaiSettings) -> str:
    """The batches as a table: status, lines done of the total, failures, owner and creation time."""
    engine = open_engine(database_url(settings))
    try:
        rows = batch_progress(engine, SHOWN_BATCHES)
    finally:
        engine.dispose()
    lines = [
        "BATCH                                   STATUS       DONE           FAILED  KEY           CREATED"
    ]
    for row in rows:
        done = row.completed + row.failed
        percent = f"{100 * done / row.total:.0f}%" if row.total else "-"
        created = datetime.fromtimestamp(row.created_at, UTC).strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"{row.id:<39} {row.status:<12} {f'{done}/{row.total} {percent}':<14} {row.failed:<7} "
            f"{row.owner or '-':<13} {created}"
        )
    return "\n".join(lines)

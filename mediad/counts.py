"""Rows per stage and status, read without scanning post_media.

Statement triggers (sql/queries.sql: write_function) append, in the writing statement's own
transaction, the change it made to each (stage, status, error_code) to `mediad_row_counts`;
every path that changes a status (claims, completions, retries, `mediad retry`, a scraper's
INSERT or COPY, a DELETE) is counted alike. Folding sums those delta rows, so a read stays a
few hundred rows however large the table. The rows due and leased, which change with the
clock, are counted through each stage's queue index instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from mediad import queries, stages
from mediad.queries import Registry

log = structlog.get_logger(__name__)

# Any fixed number: one fold at a time across every host; the others skip theirs.
_FOLD_LOCK_KEY = 0x6D65646961640002
# Below this many delta rows a fold is not worth its writes.
_FOLD_ABOVE = 500
# How often a running daemon folds, so the deltas of a busy day never pile up unread.
FOLD_INTERVAL = 30.0


@dataclass(frozen=True)
class Counts:
    """Rows per stage and status, the failed ones per error_code, and the queue's due and
    leased rows per stage."""

    rows: dict[str, dict[str, int]]
    failures: dict[tuple[str, str], int]
    due: dict[str, int]
    leased: dict[str, int]


async def fold(pool: asyncpg.Pool[Any]) -> None:
    """Sum the delta rows into one per key, unless they are few or another fold runs."""
    await pool.execute(queries.plain()["fold_row_counts"], _FOLD_LOCK_KEY, _FOLD_ABOVE)


async def read(pool: asyncpg.Pool[Any], registry: Registry = stages.ALL) -> Counts:
    """The counts of every stage of `registry` now (folding first when the deltas piled up)."""
    sql = queries.plain(tuple(registry))
    await fold(pool)
    rows: dict[str, dict[str, int]] = {d.name: {} for d in registry}
    failures: dict[tuple[str, str], int] = {}
    for record in await pool.fetch(sql["row_counts"]):
        by_status = rows.get(record["stage"])
        if by_status is None:
            continue  # a stage no longer declared
        status = record["status"]
        by_status[status] = by_status.get(status, 0) + record["rows"]
        if record["error_code"] is not None:
            failures[(record["stage"], record["error_code"])] = record["rows"]
    queue = {r["stage"]: r for r in await pool.fetch(sql["queue_counts"])}
    return Counts(
        rows=rows,
        failures=failures,
        due={name: queue[name]["due"] for name in rows},
        leased={name: queue[name]["leased"] for name in rows},
    )


@contextlib.asynccontextmanager
async def folding(pool: asyncpg.Pool[Any], interval: float = FOLD_INTERVAL) -> AsyncIterator[None]:
    """Fold every `interval` seconds while the block runs (the daemon's life)."""

    async def forever() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await fold(pool)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                # Unfolded deltas are still exact; the next fold takes them.
                log.warning("count_fold_failed", error=str(exc))

    task = asyncio.create_task(forever(), name="count-fold")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""The database side of one stage's queue: claim, heartbeat, finish and release, in batches.

Every write is fenced on the lease (owner and attempt), so a worker whose lease was taken
over cannot overwrite the new owner's result; each returns the media_ids it actually wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from mediad import events, queries, stages
from mediad.queries import Registry
from mediad.stage import Result, Row, Stage

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Completed:
    row: Row
    result: Result


@dataclass(frozen=True)
class Retry:
    row: Row
    delay: float
    error_code: str
    error: str


@dataclass(frozen=True)
class Deferred:
    row: Row
    delay: float
    reason: str
    error: str


@dataclass(frozen=True)
class Failed:
    row: Row
    error_code: str
    error: str


@dataclass(frozen=True)
class Skipped:
    row: Row
    reason: str


@dataclass(frozen=True)
class Released:
    row: Row
    reason: str


Outcome = Completed | Retry | Deferred | Failed | Skipped | Released


class StageQueue:
    """One stage's claim and finish statements, bound to this worker's lease owner name."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        stage: Stage,
        owner: str,
        lease: float,
        *,
        registry: Registry = stages.ALL,
        disabled: frozenset[str] = frozenset(),
    ) -> None:
        self._pool = pool
        self._stage = stage
        # Completions skip the `disabled` stages they open.
        self._sql = queries.for_stage(stage.declaration, tuple(registry), disabled)
        self.owner = owner
        self.lease = lease

    async def claim(self, limit: int) -> list[Row]:
        """Lease up to `limit` due rows; rows whose worker died on their last attempt are failed
        (worker_lost) instead, and not returned."""
        records = await self._pool.fetch(
            self._sql["claim"],
            self.owner,
            limit,
            self.lease,
            self._stage.storage_node,
            self._stage.max_attempts,
        )
        rows = []
        for record in records:
            fields = dict(record.items())
            if fields.pop("lost"):
                log.error("row_failed", error_code="worker_lost", media_id=record["media_id"],
                          stage=self._stage.name, attempt=record["attempt"])  # fmt: skip
            else:
                rows.append(Row(**fields))
        return rows

    async def heartbeat(self, rows: Sequence[Row]) -> set[str]:
        """Extend the leases of `rows`; returns the media_ids still ours."""
        if not rows:
            return set()
        records = await self._pool.fetch(
            self._sql["heartbeat"],
            [r.media_id for r in rows],
            [r.attempt for r in rows],
            self.lease,
            self.owner,
        )
        return {r["media_id"] for r in records}

    async def count_due(self) -> int:
        count: int = await self._pool.fetchval(self._sql["count_due"], self._stage.storage_node)
        return count

    async def count_held(self, owners: Sequence[str]) -> int:
        """Rows of this stage leased to any of `owners` now (a host's worker processes)."""
        count: int = await self._pool.fetchval(self._sql["count_held"], list(owners))
        return count

    async def finish(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Write a batch of outcomes, one statement per kind; returns the media_ids written."""
        written: set[str] = set()
        completed = [o for o in outcomes if isinstance(o, Completed)]
        retries = [o for o in outcomes if isinstance(o, Retry)]
        deferrals = [o for o in outcomes if isinstance(o, Deferred)]
        failures = [o for o in outcomes if isinstance(o, Failed)]
        skips = [o for o in outcomes if isinstance(o, Skipped)]
        releases = [o for o in outcomes if isinstance(o, Released)]
        if completed:
            written |= await self._write(
                self._sql["complete"],
                [o.row.media_id for o in completed],
                [o.row.attempt for o in completed],
                [dict(o.result.columns) for o in completed],
                [events.clean_details(o.result.details) for o in completed],
                [dict(o.result.metadata) for o in completed],
                self.owner,
            )
        if retries:
            written |= await self._write(
                self._sql["retry"],
                [o.row.media_id for o in retries],
                [o.row.attempt for o in retries],
                [o.delay for o in retries],
                [o.error_code for o in retries],
                [events.redact_text(o.error) for o in retries],
                self.owner,
            )
        if deferrals:
            written |= await self._write(
                self._sql["defer"],
                [o.row.media_id for o in deferrals],
                [o.row.attempt for o in deferrals],
                [o.delay for o in deferrals],
                [o.reason for o in deferrals],
                [events.redact_text(o.error) for o in deferrals],
                self.owner,
            )
        if failures:
            written |= await self._write(
                self._sql["fail"],
                [o.row.media_id for o in failures],
                [o.row.attempt for o in failures],
                [o.error_code for o in failures],
                [events.redact_text(o.error) for o in failures],
                self.owner,
            )
        if skips:
            written |= await self._write(
                self._sql["skip"],
                [o.row.media_id for o in skips],
                [o.row.attempt for o in skips],
                [o.reason for o in skips],
                self.owner,
            )
        for reason in sorted({o.reason for o in releases}):
            batch = [o.row for o in releases if o.reason == reason]
            written |= await self.release(batch, reason)
        return written

    async def release(self, rows: Sequence[Row], reason: str) -> set[str]:
        """Hand rows back unprocessed, due again at once for any worker."""
        if not rows:
            return set()
        return await self._write(
            self._sql["release"],
            [r.media_id for r in rows],
            [r.attempt for r in rows],
            self.owner,
            reason,
        )

    async def _write(self, sql: str, *args: Any) -> set[str]:
        records = await self._pool.fetch(sql, *args)
        return {r["media_id"] for r in records}

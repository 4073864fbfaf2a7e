"""The database side of one stage's queue: claim, heartbeat, finish and release, in batches.

Every write is fenced on the lease (owner and attempt), so a worker whose lease was taken
over cannot overwrite the new owner's result; each says which rows it actually wrote (finish:
with the outcome recorded for each, a row's failure where the database refused its result).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
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

# What the database says of a value sent to it, not of itself: text it cannot store (a NUL), a
# number out of range, a value breaking a constraint, a JSON document over its limits. Sending
# the same values again can never work; every other error (a connection, a restart) may.
REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)


# The columns each kind of outcome's statement takes between (media_ids, attempts) and the lease
# owner, one value per outcome (releases go by reason: StageQueue.release).
_COLUMNS: dict[type, tuple[Callable[[Any], Any], ...]] = {
    Completed: (
        lambda o: dict(o.result.columns),
        lambda o: events.clean_details(o.result.details),
        lambda o: dict(o.result.metadata),
    ),
    Retry: (lambda o: o.delay, lambda o: o.error_code, lambda o: events.redact_text(o.error)),
    Deferred: (lambda o: o.delay, lambda o: o.reason, lambda o: events.redact_text(o.error)),
    Failed: (lambda o: o.error_code, lambda o: events.redact_text(o.error)),
    Skipped: (lambda o: o.reason,),
}


def _record(recorded: dict[str, Outcome], group: Sequence[Outcome], written: set[str]) -> None:
    """Note, of `group`, the outcomes whose rows a statement wrote (`written`, media_ids)."""
    recorded.update({o.row.media_id: o for o in group if o.row.media_id in written})


def _unrecordable(outcome: Any, exc: Exception) -> Failed:
    """What a row records instead of an outcome the database refused."""
    what = type(outcome).__name__.lower()
    return Failed(
        outcome.row,
        "result_unrecordable",
        f"its {what} result could not be recorded: the database refused it:"
        f" {type(exc).__name__}: {exc}",
    )


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
        # The statement recording each kind of outcome (its columns: _COLUMNS).
        self._statements = {
            Completed: self._sql["complete"],
            Retry: self._sql["retry"],
            Deferred: self._sql["defer"],
            Failed: self._sql["fail"],
            Skipped: self._sql["skip"],
        }

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

    async def finish(
        self, outcomes: Sequence[Outcome], recorded: dict[str, Outcome] | None = None
    ) -> dict[str, Outcome]:
        """Write a batch of outcomes, one statement per kind; returns what was recorded for each
        media_id written (a row whose lease was lost is not written).

        The statements are not one transaction. `recorded`, when given, is filled as each one
        returns (and returned), so a caller whose batch broke off midway knows which outcomes
        are written: sent again, they would find their rows no longer leased, as if lost.

        An outcome holding a value the database refuses (text it cannot store, a number out of
        range: see REFUSED) must not keep the others from being recorded, nor be retried for
        ever: its kind's statement is sent again one outcome at a time, and each one refused is
        recorded failed `result_unrecordable` instead, saying what the database refused.
        """
        if recorded is None:
            recorded = {}
        kinds: dict[type, list[Outcome]] = {}
        for outcome in outcomes:
            if not isinstance(outcome, Released):
                kinds.setdefault(type(outcome), []).append(outcome)
        refused: list[Failed] = []
        for kind, group in kinds.items():
            turned_down = await self._write_apart(kind, group, recorded)
            refused += [_unrecordable(o, exc) for o, exc in turned_down]
        if refused:
            for outcome, exc in await self._write_apart(Failed, refused, recorded):
                # Not even its failure can be written: the row stays leased until the lease
                # lapses, and the attempts it then spends bound how often this repeats.
                log.error("row_unrecordable", media_id=outcome.row.media_id,
                          stage=self._stage.name, error=str(exc))  # fmt: skip
        releases = [o for o in outcomes if isinstance(o, Released)]
        for reason in sorted({o.reason for o in releases}):
            group = [o for o in releases if o.reason == reason]
            _record(recorded, group, await self.release([o.row for o in group], reason))
        return recorded

    async def _write_apart(
        self, kind: type, group: Sequence[Any], recorded: dict[str, Outcome]
    ) -> list[tuple[Any, Exception]]:
        """Write the group (all of `kind`) in one statement; if the database refuses a value in
        it, each outcome alone. What each statement wrote goes into `recorded` as it returns;
        the outcomes refused are returned with why."""
        write = functools.partial(self._write_kind, kind)
        try:
            _record(recorded, group, await write(group))
            return []
        except REFUSED as exc:
            if len(group) == 1:
                return [(group[0], exc)]
        turned_down: list[tuple[Any, Exception]] = []
        for outcome in group:
            try:
                _record(recorded, [outcome], await write([outcome]))
            except REFUSED as exc:
                turned_down.append((outcome, exc))
        return turned_down

    async def _write_kind(self, kind: type, group: Sequence[Any]) -> set[str]:
        """The statement of `kind` for every outcome of the group."""
        return await self._write(
            self._statements[kind],
            [o.row.media_id for o in group],
            [o.row.attempt for o in group],
            *([column(o) for o in group] for column in _COLUMNS[kind]),
            self.owner,
        )

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

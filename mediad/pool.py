"""One stage's worker pool: claims batches, runs `process(row)` with bounded concurrency,
keeps the leases alive, and writes the outcomes back in batches.

The loop waits on one thing only: "something changed" (a NOTIFY, a slot freed, stop asked)
or the poll interval passing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from mediad import errors, metrics
from mediad.db import DB_ERRORS
from mediad.queue import (
    Completed,
    Deferred,
    Failed,
    Outcome,
    Released,
    Retry,
    Skipped,
    StageQueue,
)  # fmt: skip
from mediad.retry import Backoff
from mediad.stage import Row, Stage

log = structlog.get_logger(__name__)

_WRITERS = 2
# How long a busy pool holds a few finished rows for others to share their write with. A row
# waiting here no longer holds a place of `concurrency` (_free_places), so the wait delays its
# recording, not the next row's work. A statement costs PostgreSQL about half a millisecond
# whatever its rows (planning, the counts trigger, the commit; benchmarks/queue_statements.py):
# 5,000 photos at two processes of 32 rows on 2 cores (benchmarks/download.py, alternating)
# took 0.19 statements a file instead of 0.29, most of them now the claims of 8 rows, and a
# quarter less PostgreSQL CPU, than with 10 ms and rows holding their place until written.
_LINGER = 0.05


@dataclass
class _Job:
    row: Row
    task: asyncio.Task[None] | None = None
    # Why the pool cancelled the task, if it did ("shutdown", "lease_lost").
    cancelled_for: str | None = None
    started: float = field(default_factory=time.monotonic)
    outcome: Outcome | None = field(default=None, repr=False)


@dataclass
class PoolStats:
    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    released: int = 0
    lost: int = 0


class StagePool:
    """Runs one stage until stopped; see the module docstring."""

    def __init__(
        self,
        stage: Stage,
        queue: StageQueue,
        *,
        backoff: Backoff,
        claim_batch: int,
        poll_interval: float,
    ) -> None:
        self.stage = stage
        self.queue = queue
        self.backoff = backoff
        self.claim_batch = claim_batch
        self.poll_interval = poll_interval
        self.stats = PoolStats()
        # Set while the last claim found nothing and nothing is in flight (run --once uses it).
        self.idle = asyncio.Event()
        # Set after every pass of the loop; lets a watcher wait for a fresh look at the queue.
        self.looked = asyncio.Event()
        self.last_tick = time.monotonic()
        self._jobs: dict[str, _Job] = {}
        self._pending: list[Outcome] = []
        self._pending_added = asyncio.Event()
        self._changed = asyncio.Event()
        self._paused_until = 0.0
        # While the last claim found as many rows as it asked for (a backlog), freed slots are
        # claimed for `_claim_at_least` at a time: one claim per finished row would cost the
        # database a statement (and a counts trigger) per row. Without a backlog any free slot
        # claims at once, so a new row never waits for others to finish.
        self._backlog = False
        self._claim_at_least = max(1, min(claim_batch, stage.concurrency // 4))
        self._log = log.bind(stage=stage.name)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def wake(self) -> None:
        """Look at the queue now (a NOTIFY arrived)."""
        self._changed.set()

    def pause(self, seconds: float, reason: str, error_code: str = "other") -> None:
        """Stop claiming for `seconds`: the stage cannot work at all right now."""
        now = time.monotonic()
        if self._paused_until <= now:
            # Said once, loudly, when the pause begins; rows failing alike meanwhile only
            # extend it.
            self._log.error("stage_paused", reason=reason, seconds=round(seconds, 1))
            metrics.count_pause(self.stage.name, error_code)
        self._paused_until = max(self._paused_until, now + seconds)

    async def run(self, stop: asyncio.Event, grace: float) -> None:
        """Claim and process until `stop` is set, then drain within `grace` seconds."""
        flusher = asyncio.create_task(self._flush_forever(), name=f"{self.stage.name}-flusher")
        heart = asyncio.create_task(self._heartbeat_forever(), name=f"{self.stage.name}-heartbeat")
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await self._step(stopper)
            await self._drain(grace)
        finally:
            stopper.cancel()
            heart.cancel()
            flusher.cancel()
            await asyncio.gather(heart, flusher, stopper, return_exceptions=True)

    async def _step(self, stopper: asyncio.Task[bool]) -> None:
        self.last_tick = time.monotonic()
        self._changed.clear()
        wait = self.poll_interval
        paused_for = self._paused_until - time.monotonic()
        free = self._free_places()
        claimed: list[Row] = []
        if paused_for > 0:
            wait = min(wait, paused_for)
        elif free >= (self._claim_at_least if self._backlog and self._jobs else 1):
            limit = min(free, self.claim_batch)
            try:
                claimed = await self.queue.claim(limit)
            except DB_ERRORS as exc:
                self._log.warning("claim_failed", error=str(exc))
                # Not idle: the queue was not looked at, so run --once must neither stop nor
                # spin on it; look again in a second.
                self.idle.clear()
                await asyncio.wait({stopper}, timeout=1.0)
                return
            else:
                for row in claimed:
                    self._start(row)
                self.stats.claimed += len(claimed)
                self._backlog = len(claimed) == limit
                if len(claimed) == limit < free:
                    wait = 0.0  # a full batch with room left: there is likely more
        if not claimed and not self._jobs:
            self.idle.set()
        else:
            self.idle.clear()
        self.looked.set()
        if wait > 0:
            changed = asyncio.create_task(self._changed.wait())
            await asyncio.wait({changed, stopper}, timeout=wait, return_when="FIRST_COMPLETED")
            changed.cancel()

    def _free_places(self) -> int:
        """Rows the pool may claim now: `concurrency` bounds the rows at work; a row whose
        outcome waits to be written no longer counts, but the rows leased (at work or waiting)
        never pass twice `concurrency`, however slowly the database takes the writes."""
        concurrency = self.stage.concurrency
        at_work = sum(job.outcome is None for job in self._jobs.values())
        return min(concurrency - at_work, 2 * concurrency - len(self._jobs))

    def _start(self, row: Row) -> None:
        job = _Job(row)
        self._jobs[row.media_id] = job
        job.task = asyncio.create_task(self._run_job(job), name=f"{self.stage.name}:{row.media_id}")

    async def _run_job(self, job: _Job) -> None:
        row = job.row
        # Each job runs in a task of its own, with its own copy of the context: binding here
        # needs no unbinding, and is far cheaper than a context manager per row.
        structlog.contextvars.bind_contextvars(
            media_id=row.media_id, stage=self.stage.name, attempt=row.attempt
        )
        try:
            outcome = await self._outcome(row)
        except asyncio.CancelledError:
            if job.cancelled_for is not None:
                raise  # the pool cancelled it and decides what becomes of the row
            # Cancelled from inside the stage: never leave the row stuck in flight.
            outcome = self._retry_or_fail(row, "internal_error", "processing was cancelled", None)
        self._submit(outcome)

    async def _outcome(self, row: Row) -> Outcome:
        try:
            result = await self.stage.process(row)
        except errors.SkipRowError as exc:
            return Skipped(row, str(exc))
        except errors.StagePausedError as exc:
            self.pause(exc.pause_for, f"{exc.error_code}: {exc}", exc.error_code)
            return Released(row, reason=exc.error_code)
        except errors.DeferredError as exc:
            self._log.info("row_deferred", reason=exc.error_code, delay=round(exc.delay, 1))
            return Deferred(row, exc.delay, exc.error_code, str(exc))
        except errors.PermanentError as exc:
            self._log.warning("row_failed", error_code=exc.error_code, error=str(exc))
            return Failed(row, exc.error_code, str(exc))
        except errors.TransientError as exc:
            return self._retry_or_fail(row, exc.error_code, str(exc), exc.retry_after)
        except errors.StageError as exc:
            return self._retry_or_fail(row, exc.error_code, str(exc), None)
        except Exception as exc:
            # A bug must not take the daemon down; retrying bounds the damage to max_attempts.
            self._log.exception("row_crashed")
            return self._retry_or_fail(row, "internal_error", f"{type(exc).__name__}: {exc}", None)
        undeclared = set(result.columns) - set(self.stage.declaration.columns)
        if undeclared:
            # A bug in the stage: its declaration says which columns it may write.
            self._log.error("undeclared_columns", columns=sorted(undeclared))
            error = f"the {self.stage.name} stage wrote undeclared columns {sorted(undeclared)}"
            return self._retry_or_fail(row, "internal_error", error, None)
        return Completed(row, result)

    def _retry_or_fail(
        self, row: Row, error_code: str, error: str, retry_after: float | None
    ) -> Outcome:
        if row.attempt >= self.stage.max_attempts:
            self._log.warning("row_failed", error_code=error_code, error=error, final=True)
            return Failed(row, error_code, f"{error} (after {row.attempt} attempts)")
        delay = self.backoff.delay(row.attempt, retry_after=retry_after)
        self._log.info("retry_scheduled", error_code=error_code, error=error, delay=round(delay, 2))
        return Retry(row, delay, error_code, error)

    def _submit(self, outcome: Outcome) -> None:
        job = self._jobs.get(outcome.row.media_id)
        if job is None or job.row.attempt != outcome.row.attempt or job.outcome is not None:
            return
        job.outcome = outcome
        self._pending.append(outcome)
        self._pending_added.set()
        # Its place is free now, before its write: the claim loop may take a row for it.
        self._changed.set()

    async def _flush_forever(self) -> None:
        # Natural batching: while a write is in flight, the next batch accumulates. Two writes
        # may be in flight at once, so the database can use a second core while a batch of
        # results is written.
        writers = asyncio.Semaphore(_WRITERS)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._pending_added.wait()
                await writers.acquire()
                if len(self._pending) < self._claim_at_least < len(self._jobs):
                    # Busy: a moment more lets a few rows share the statement (and the slots
                    # they free, one claim), instead of a write per finished row.
                    await asyncio.sleep(_LINGER)
                self._pending_added.clear()
                batch, self._pending = self._pending, []
                if not batch:
                    writers.release()
                    continue
                task = asyncio.create_task(self._write(batch))
                task.add_done_callback(lambda _t: writers.release())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            for task in in_flight:
                task.cancel()

    async def _write(self, batch: list[Outcome]) -> None:
        delay = 0.2
        # Filled statement by statement: after a failure midway, only what is not yet written
        # is sent again (the rest would find its rows no longer leased, and count as lost).
        recorded: dict[str, Outcome] = {}
        unwritten = batch
        while True:
            try:
                await asyncio.shield(self.queue.finish(unwritten, recorded))
                break
            except DB_ERRORS as exc:
                # Keep the rows in flight: if the lease lapses meanwhile, the fence drops
                # this late write and another worker's result stands.
                unwritten = [o for o in batch if o.row.media_id not in recorded]
                self._log.warning("finish_failed", error=str(exc), rows=len(unwritten))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for submitted in batch:
            media_id = submitted.row.media_id
            # What the row says now: the outcome, or its failure when the database refused it.
            outcome = recorded.get(media_id, submitted)
            if outcome is not submitted and isinstance(outcome, Failed):
                self._log.error(
                    "row_failed", media_id=media_id, error_code=outcome.error_code,
                    error=outcome.error,
                )  # fmt: skip
            if media_id not in recorded:
                self.stats.lost += 1
                metrics.LEASES_LOST.labels(self.stage.name).inc()
                self._log.warning("result_discarded_lease_lost", media_id=media_id)
            elif isinstance(outcome, Completed):
                self.stats.completed += 1
                metrics.count_outcome(self.stage.name, "completed")
                self._log_completed(outcome, self._jobs.get(media_id))
            elif isinstance(outcome, Retry | Deferred):
                self.stats.retried += 1
                if isinstance(outcome, Retry):
                    metrics.count_outcome(self.stage.name, "retried", outcome.error_code)
                else:
                    metrics.count_outcome(self.stage.name, "deferred", outcome.reason)
            elif isinstance(outcome, Failed):
                self.stats.failed += 1
                metrics.count_outcome(self.stage.name, "failed", outcome.error_code)
            elif isinstance(outcome, Skipped):
                self.stats.skipped += 1
                metrics.count_outcome(self.stage.name, "skipped")
            else:
                self.stats.released += 1
                metrics.count_outcome(self.stage.name, "released", outcome.reason)
            job = self._jobs.get(media_id)
            if job is not None and job.outcome is submitted:
                del self._jobs[media_id]
        self._changed.set()

    def _log_completed(self, outcome: Completed, job: _Job | None) -> None:
        """One line per finished row, so a tail of the log shows a working daemon."""
        extra: dict[str, object] = {}
        if "deduplicated" in outcome.result.details:
            extra["deduplicated"] = bool(outcome.result.details["deduplicated"])
        self._log.info(
            "row_completed",
            media_id=outcome.row.media_id,
            attempt=outcome.row.attempt,
            seconds=round(time.monotonic() - job.started, 3) if job is not None else None,
            # The file the stage stored or worked on.
            bytes=outcome.result.columns.get("file_size", outcome.row.file_size),
            **extra,
        )

    async def _heartbeat_forever(self) -> None:
        interval = self.queue.lease / 3
        while True:
            await asyncio.sleep(interval)
            rows = [job.row for job in self._jobs.values()]
            try:
                held = await self.queue.heartbeat(rows)
            except DB_ERRORS as exc:
                self._log.warning("heartbeat_failed", error=str(exc))
                continue
            for row in rows:
                job = self._jobs.get(row.media_id)
                lost = row.media_id not in held and job is not None and job.row is row
                if lost and job is not None and job.outcome is None and job.task is not None:
                    # Another worker owns the row now: stop spending effort on it.
                    self._log.warning("lease_lost", media_id=row.media_id)
                    self.stats.lost += 1
                    metrics.LEASES_LOST.labels(self.stage.name).inc()
                    job.cancelled_for = "lease_lost"
                    job.task.cancel()
                    del self._jobs[row.media_id]

    async def _drain(self, grace: float) -> None:
        """Let in-flight work finish within `grace`, then hand back what did not."""
        running = {j.task for j in self._jobs.values() if j.task is not None and not j.task.done()}
        if running:
            self._log.info("draining", in_flight=len(running), grace=grace)
            _, late = await asyncio.wait(running, timeout=grace)
            cancelled = [j for j in self._jobs.values() if j.task in late and j.outcome is None]
            for job in cancelled:
                job.cancelled_for = "shutdown"
                assert job.task is not None
                job.task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for job in cancelled:
                self._submit(Released(job.row, reason="shutdown"))
        # Every job left has its outcome; the flusher writes them. A database that is gone
        # cannot take them: their leases lapse and other workers take the rows.
        try:
            await asyncio.wait_for(self._until_written(), timeout=max(grace, 5.0))
        except TimeoutError:
            self._log.error("outcomes_unwritten", rows=len(self._jobs))

    async def _until_written(self) -> None:
        while self._jobs:
            self._changed.clear()
            await self._changed.wait()

    @property
    def paused(self) -> bool:
        return self._paused_until > time.monotonic()

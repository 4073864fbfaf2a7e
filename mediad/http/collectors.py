"""What /metrics reads at scrape time, beside the process counters of mediad/metrics.py: rows per
stage and status from the database (cached, so scrapes cost the database nothing), the store's
size on disk, and which of this process's stages are paused.

The database's figures are the host's (or the whole fleet's) and are made once per scrape by the
serving process, so they are never summed across worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import asyncpg
import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from mediad.commands import status
from mediad.db import DB_ERRORS
from mediad.pool import StagePool
from mediad.queries import Registry
from mediad.storage.local import Store, store_size

log = structlog.get_logger(__name__)

# How long a scrape waits for a refresh of the row counts before it serves the last ones (the
# refresh goes on, and the next scrape gets its result).
_REFRESH_WAIT = 2.0
# A refresh that takes longer than this is abandoned: the database is wedged.
_REFRESH_TIMEOUT = 30.0


class CountsCache:
    """`mediad status`'s report, read at most every `max_age` seconds however often it is asked
    for; when the database does not answer, the last report stays, marked stale."""

    def __init__(self, pool: asyncpg.Pool[Any], registry: Registry, max_age: float) -> None:
        self._pool = pool
        self._registry = registry
        self._max_age = max_age
        self.report: dict[str, Any] | None = None
        # Wall-clock time of the last successful read (0: never), and whether the last try failed.
        self.refreshed_at = 0.0
        self.failed = False
        self._tried_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def stale(self) -> bool:
        return self.report is None or self.failed

    async def fresh(self) -> dict[str, Any] | None:
        """The report, refreshed first when it is older than max_age (waiting a moment for it)."""
        if time.monotonic() - self._tried_at >= self._max_age and self._refreshing is None:
            self._tried_at = time.monotonic()
            self._refreshing = asyncio.create_task(self._refresh(), name="http-counts")
        if self._refreshing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._refreshing), _REFRESH_WAIT)
        return self.report

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing

    async def _refresh(self) -> None:
        try:
            report = await asyncio.wait_for(
                status.report(self._pool, self._registry), _REFRESH_TIMEOUT
            )
        except DB_ERRORS as exc:
            if not self.failed:
                log.warning("http_counts_failed", error=str(exc))
            self.failed = True
        else:
            self.report, self.refreshed_at, self.failed = report, time.time(), False
        finally:
            self._refreshing = None


class RowsCollector(Collector):
    """The cached report as gauges; `mediad_rows_stale` says 1 while the database is away."""

    def __init__(self, counts: CountsCache) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        rows = GaugeMetricFamily(
            "mediad_rows",
            "Rows per stage and status, from the database",
            labels=["stage", "status"],
        )
        due = GaugeMetricFamily(
            "mediad_rows_due", "Rows a stage may claim now", labels=["stage"]
        )  # fmt: skip
        leased = GaugeMetricFamily(
            "mediad_rows_leased", "Rows a worker holds a live lease on", labels=["stage"]
        )
        failed = GaugeMetricFamily(
            "mediad_rows_failed",
            "Failed rows per stage and error_code, from the database",
            labels=["stage", "error_code"],
        )
        report = self._counts.report
        if report is not None:
            for stage, entry in report["stages"].items():
                for state, count in entry["rows"].items():
                    rows.add_metric([stage, state], count)
                due.add_metric([stage], entry["due"])
                leased.add_metric([stage], entry["leased"])
            for failure in report["failures"]:
                failed.add_metric([failure["stage"], failure["error_code"]], failure["rows"])
        yield from (rows, due, leased, failed)
        yield GaugeMetricFamily(
            "mediad_rows_stale",
            "1 when the row gauges are not fresh (the database did not answer the last read)",
            value=1.0 if self._counts.stale else 0.0,
        )
        yield GaugeMetricFamily(
            "mediad_rows_refreshed_timestamp_seconds",
            "When the row gauges were last read from the database (Unix time; 0: never)",
            value=self._counts.refreshed_at,
        )


class StoreCollector(Collector):
    """`mediad_store_bytes`: the original files in the local store, walked on disk in a thread
    (the walk stats every file) at most every `interval` seconds, storage.evict_interval: how
    often the daemon measures the store for eviction too."""

    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._bytes: int | None = None
        self._walked_at = float("-inf")
        self._walking: asyncio.Task[None] | None = None

    async def fresh(self) -> None:
        """Walk if the last walk is old, waiting a moment for it (a long walk goes on, and a
        later scrape gets its result)."""
        if self._walking is None and time.monotonic() - self._walked_at >= self._interval:
            self._walked_at = time.monotonic()
            self._walking = asyncio.create_task(self._walk(), name="http-store-size")
        if self._walking is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._walking), _REFRESH_WAIT)

    async def _walk(self) -> None:
        try:
            self._bytes = await asyncio.to_thread(store_size, self._store)
        except OSError as exc:
            log.warning("http_store_size_failed", error=str(exc))
        finally:
            self._walking = None

    async def close(self) -> None:
        if self._walking is not None:
            self._walking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._walking

    def collect(self) -> Iterable[Metric]:
        if self._bytes is not None:
            yield GaugeMetricFamily(
                "mediad_store_bytes",
                "Bytes of the original files in the local store (storage.max_cache_size limits it)",
                value=self._bytes,
            )


class PoolsCollector(Collector):
    """Each of this process's stages: paused (S3 down, budget spent, disk full) or not, and the
    rows it has in flight."""

    def __init__(self, pools: Sequence[StagePool]) -> None:
        self._pools = pools

    def collect(self) -> Iterable[Metric]:
        paused = GaugeMetricFamily(
            "mediad_stage_paused", "1 while a stage has stopped claiming", labels=["stage"]
        )
        in_flight = GaugeMetricFamily(
            "mediad_rows_in_flight", "Rows a stage is working on now", labels=["stage"]
        )
        for pool in self._pools:
            paused.add_metric([pool.stage.name], 1.0 if pool.paused else 0.0)
            in_flight.add_metric([pool.stage.name], pool.in_flight)
        yield from (paused, in_flight)


class Exposition:
    """Every metric /metrics shows: the process counters (this process's, or with
    PROMETHEUS_MULTIPROC_DIR set, every process's of the host, summed) and the collectors."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._process: Collector = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            self._process = merged
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        yield from self._process.collect()
        for collector in self._collectors:
            yield from collector.collect()

"""The `progress` log line: every `log.progress_interval`, what each stage did since the last
line and what is due now; nothing at all while the daemon is idle."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from mediad.db import DB_ERRORS

if TYPE_CHECKING:
    from mediad.pool import PoolStats, StagePool

log = structlog.get_logger(__name__)

# The outcomes a line reports, as PoolStats names them.
_OUTCOMES = ("completed", "failed", "retried", "skipped", "released", "lost")


class Progress:
    """Remembers what each pool had done at the last line, to report the difference."""

    def __init__(self, pools: Sequence[StagePool]) -> None:
        self._pools = list(pools)
        self._last = {p.stage.name: dataclasses.replace(p.stats) for p in self._pools}
        self._since = time.monotonic()

    async def line(self) -> dict[str, Any] | None:
        """The fields of the next line (stages that did nothing and have nothing waiting are
        left out), or None when every stage was idle since the last one."""
        now = time.monotonic()
        fields: dict[str, Any] = {"interval_seconds": round(now - self._since, 1)}
        for pool in self._pools:
            name = pool.stage.name
            done = _difference(pool.stats, self._last[name])
            self._last[name] = dataclasses.replace(pool.stats)
            try:
                due: int | None = await pool.queue.count_due()
            except DB_ERRORS:
                due = None  # unknown this time; the stage's own warnings say why
            entry: dict[str, Any] = {k: v for k, v in done.items() if v}
            if entry or pool.in_flight or due:
                if done["completed"]:
                    entry["per_minute"] = round(done["completed"] * 60 / (now - self._since), 1)
                entry["in_flight"] = pool.in_flight
                entry["due"] = due
                if pool.paused:
                    entry["paused"] = True
                fields[name] = entry
        self._since = now
        return fields if len(fields) > 1 else None

    async def log_line(self) -> None:
        """Log the next line, unless the daemon was idle."""
        fields = await self.line()
        if fields is not None:
            log.info("progress", **fields)


def _difference(now: PoolStats, before: PoolStats) -> dict[str, int]:
    return {k: getattr(now, k) - getattr(before, k) for k in _OUTCOMES}


async def log_forever(pools: Sequence[StagePool], interval: float) -> None:
    """A progress line every `interval` seconds (the daemon's helper task); 0: none."""
    if interval <= 0:
        return
    progress = Progress(pools)
    while True:
        await asyncio.sleep(interval)
        await progress.log_line()

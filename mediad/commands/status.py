"""`mediad status`: rows per stage and status, what is due and leased, failures by error_code."""

from __future__ import annotations

from typing import Any

import asyncpg

from mediad import counts, queries, stages
from mediad.queries import Registry


async def report(
    pool: asyncpg.Pool[Any], registry: Registry = stages.ALL, *, post_id: str | None = None
) -> dict[str, Any]:
    """The `status` figures of every stage in `registry`, as one JSON-ready dict; with
    `post_id`, also what that post's analyses cost. Its cost follows the queue, not the table
    (see mediad/counts.py)."""
    sql = queries.plain(tuple(registry))
    now = await counts.read(pool, registry)
    spend = dict(await pool.fetchrow(sql["analysis_spend"]) or {})
    if post_id is not None:
        spend["post"] = {
            "post_id": post_id,
            **dict(await pool.fetchrow(sql["analysis_post_spend"], post_id) or {}),
        }
    by_stage: dict[str, dict[str, Any]] = {
        name: {"rows": dict(sorted(rows.items())), "due": now.due[name], "leased": now.leased[name]}
        for name, rows in now.rows.items()
    }
    # Most frequent first, as the full scan ordered them.
    ordered = sorted(now.failures.items(), key=lambda item: (-item[1], *item[0]))
    failures = [{"stage": s, "error_code": code, "rows": rows} for (s, code), rows in ordered]
    return {
        "stages": by_stage,
        "queue_depth": {name: entry["due"] for name, entry in by_stage.items()},
        "failures": failures,
        "analysis_spend": spend,
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
    spend = report["analysis_spend"]
    lines.append("")
    lines.append(
        f"analysis today: {spend['requests_today']} requests, {spend['tokens_today']} tokens,"
        f" {spend['cost_today_usd']:.4f} USD; in total: {spend['requests_total']} requests,"
        f" {spend['tokens_total']} tokens, {spend['cost_total_usd']:.4f} USD"
    )
    if "post" in spend:
        post = spend["post"]
        lines.append(
            f"post {post['post_id']}: {post['analysed']} analysed, {post['tokens']} tokens,"
            f" {post['cost_usd']:.4f} USD"
        )
    return "\n".join(lines)

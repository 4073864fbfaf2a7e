"""The command line: `mediad [--config PATH] COMMAND`.

Exit status: 0 success, 1 failure, 2 bad usage or bad config, with one line naming the problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from mediad import __version__, config, daemon, db, errors, migrate, queries
from mediad import log as logsetup

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediad", description="Keeps the media of social-media archives alive."
    )
    parser.add_argument("--config", help="config file (default: $MEDIAD_CONFIG, ./config.toml)")
    parser.add_argument("--version", action="version", version=f"mediad {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--once", action="store_true", help="drain what is due, then exit")

    commands.add_parser("migrate", help="create or adopt the schema (idempotent)")

    enqueue = commands.add_parser("enqueue", help="queue URLs for download; prints media_ids")
    enqueue.add_argument("urls", nargs="+", metavar="URL")
    enqueue.add_argument("--post-id")
    enqueue.add_argument("--media-type", default="image", help="image (default), video, gif, ...")
    enqueue.add_argument("--platform", help="default: derived from the URL's host")

    status = commands.add_parser("status", help="counts per stage and status, failures by code")
    status.add_argument("--json", action="store_true")

    listing = commands.add_parser("list", help="rows, newest first")
    listing.add_argument("--post-id")
    listing.add_argument(
        "--status", choices=["not_started", "started", "completed", "failed", "skipped"]
    )
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")

    show = commands.add_parser("show", help="one row with its event log")
    show.add_argument("media_id")
    show.add_argument("--json", action="store_true")

    retry = commands.add_parser("retry", help="re-queue rows")
    retry.add_argument(
        "--failed", action="store_true", help="only failed rows (the default without --media-id)"
    )
    retry.add_argument("--stage", choices=list(queries.STAGES), default="download")
    retry.add_argument("--media-id")
    retry.add_argument("--error-code")
    retry.add_argument("--post-id")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config.load(config.find_config_path(args.config))
    except errors.ConfigError as exc:
        print(f"mediad: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        logsetup.configure(cfg.log.format, cfg.log.level)
    else:
        # Commands print their answer on stdout; only problems go to stderr.
        logsetup.configure("console", "warning", stream=sys.stderr)
    command = _COMMANDS[args.command]
    try:
        return asyncio.run(command(cfg, args))
    except errors.ConfigError as exc:
        print(f"mediad: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.MediadError as exc:
        print(f"mediad: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except asyncpg.PostgresError as exc:
        print(f"mediad: database: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


async def _run(cfg: config.Config, args: argparse.Namespace) -> int:
    try:
        await daemon.run(cfg, once=args.once)
    except asyncio.CancelledError:
        return EXIT_FAILURE  # a second signal: stopped without draining
    return EXIT_OK


async def _with_pool(
    cfg: config.Config, work: Callable[[asyncpg.Pool[Any]], Awaitable[int]]
) -> int:
    url = await asyncio.to_thread(db.database_url, cfg)
    await migrate.migrate_url(url)
    pool = await db.create_pool(url, max_size=2)
    try:
        return await work(pool)
    finally:
        await pool.close()


async def _migrate(cfg: config.Config, args: argparse.Namespace) -> int:
    applied = await migrate.migrate_url(await asyncio.to_thread(db.database_url, cfg))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return EXIT_OK


async def _enqueue(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        sql = queries.plain()["enqueue"]
        async with pool.acquire() as conn, conn.transaction():
            for url in args.urls:
                media_id = await conn.fetchval(
                    sql, args.post_id, url, args.media_type, args.platform, None
                )
                print(media_id)
        return EXIT_OK

    return await _with_pool(cfg, work)


async def _status(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        counts = await pool.fetch(queries.plain()["stage_counts"])
        failures = await pool.fetch(queries.plain()["failures_by_code"])
        report = status_report(counts, failures)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(_format_status(report))
        return EXIT_OK

    return await _with_pool(cfg, work)


def status_report(
    counts: Sequence[asyncpg.Record], failures: Sequence[asyncpg.Record]
) -> dict[str, Any]:
    """The `status` figures as one JSON-ready dict."""
    stages: dict[str, dict[str, Any]] = {
        name: {"rows": {}, "due": 0, "leased": 0} for name in queries.STAGES
    }
    for record in counts:
        entry = stages[record["stage"]]
        entry["rows"][record["status"]] = record["rows"]
        entry["due"] += record["due"]
        entry["leased"] += record["leased"]
    return {
        "stages": stages,
        "queue_depth": {name: entry["due"] for name, entry in stages.items()},
        "failures": [dict(r) for r in failures],
    }


def _format_status(report: dict[str, Any]) -> str:
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def _list(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        records = await pool.fetch(
            queries.plain()["list_rows"], args.post_id, args.status, args.limit
        )
        rows = [{k: _jsonable(v) for k, v in r.items()} for r in records]
        if args.json:
            print(json.dumps(rows, indent=2))
            return EXIT_OK
        for row in rows:
            print(
                f"{row['media_id']}  {row['download_status']:<11} {row['archive_status']:<11} "
                f"{row['ai_analysis_status']:<11} {row['error_code'] or '-':<16} {row['media_url']}"
            )
        return EXIT_OK

    return await _with_pool(cfg, work)


async def _show(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        record = await pool.fetchrow(queries.plain()["show_row"], args.media_id)
        if record is None:
            print(f"mediad: no row with media_id {args.media_id!r}", file=sys.stderr)
            return EXIT_FAILURE
        row = {k: _jsonable(v) for k, v in record.items()}
        if args.json:
            print(json.dumps(row, indent=2))
            return EXIT_OK
        log_entries = row.pop("ai_analysis_log") or []
        for key, value in row.items():
            if value is not None:
                shown = json.dumps(value) if isinstance(value, dict | list) else value
                print(f"{key}: {shown}")
        print("log:")
        for entry in log_entries:
            details = json.dumps(entry.get("details", {}), sort_keys=True)
            when, event, status = entry.get("timestamp"), entry.get("event"), entry.get("status")
            print(f"  {when}  {event:<24} {status:<8} {details}")
        return EXIT_OK

    return await _with_pool(cfg, work)


async def _retry(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        statuses = ["failed"]
        if args.media_id and not args.failed:
            # Naming one row means "do it again", whatever became of it (unless in flight).
            statuses = ["failed", "completed", "skipped", "not_started"]
        records = await pool.fetch(
            queries.for_stage(args.stage)["requeue"],
            statuses,
            args.media_id,
            args.error_code,
            args.post_id,
            "mediad retry",
        )
        for record in records:
            print(record["media_id"])
        print(f"re-queued {len(records)} row(s) for {args.stage}", file=sys.stderr)
        if args.media_id and not records:
            return EXIT_FAILURE
        return EXIT_OK

    return await _with_pool(cfg, work)


_COMMANDS: dict[str, Callable[[config.Config, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": _run,
    "migrate": _migrate,
    "enqueue": _enqueue,
    "status": _status,
    "list": _list,
    "show": _show,
    "retry": _retry,
}

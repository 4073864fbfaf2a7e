"""The command line: `mediad [--config PATH] COMMAND`.

Exit status: 0 success, 1 failure, 2 bad usage or bad config, with one line naming the problem.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import asyncpg
import structlog

from mediad import __version__, config, db, errors, migrate, queries, stages
from mediad import log as logsetup
from mediad.commands import duplicates, importer, progress, status, watch
from mediad.stage import Result, Row
from mediad.storage.local import Store

# The archive's modules bring aiobotocore and botocore, about 0.3 s to import, and the daemon
# (with the derive commands, which reach the archive) the stages, aiohttp and the decoders:
# the commands that need them import them, and every other command starts sooner (a backfill
# of `mediad import` in many small runs pays start-up each time).
if TYPE_CHECKING:
    from mediad.commands import verify
    from mediad.storage import s3

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _seconds(text: str) -> float:
    """A duration given on the command line (`2`, `500ms`, `1m`), more than zero."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = config.parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not more than zero")
    return seconds


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

    importing = commands.add_parser(
        "import",
        help="queue the media of posts saved as JSON files (seed 001, Twitter, Facebook and"
        " Instagram Graph API)",
    )
    importing.add_argument(
        "paths", nargs="+", metavar="PATH", help="JSON or JSON Lines files, or directories of them"
    )
    importing.add_argument(
        "--json", action="store_true", help="a JSON report per file, no progress bar"
    )

    counting = commands.add_parser("status", help="counts per stage and status, failures by code")
    counting.add_argument("--json", action="store_true")
    counting.add_argument("--post-id", help="also what this post's analyses cost")
    counting.add_argument(
        "--watch", action="store_true", help="report again every --interval, until Ctrl-C"
    )
    counting.add_argument("--interval", type=_seconds, default=2.0, help="for --watch (2s)")

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
    retry.add_argument("--stage", choices=[d.name for d in stages.ALL], default="download")
    retry.add_argument("--media-id")
    retry.add_argument("--error-code")
    retry.add_argument("--post-id")

    analyzing = commands.add_parser(
        "analyze", help="re-queue analysis (after a change of model or prompt)"
    )
    analyzing.add_argument("--media-id", action="append", help="this row (repeatable)")
    analyzing.add_argument("--post-id", help="every row of this post")
    analyzing.add_argument(
        "--status",
        choices=["completed", "failed", "skipped", "not_started"],
        help="only rows whose analysis has this status (default: completed, failed, skipped)",
    )
    analyzing.add_argument("--all", action="store_true", help="every row")
    analyzing.add_argument("--json", action="store_true")

    near = commands.add_parser(
        "duplicates", help="groups of media that are one picture re-encoded or resized"
    )
    near.add_argument("--post-id", help="only this post's media")
    near.add_argument("--json", action="store_true")

    verify = commands.add_parser(
        "verify", help="re-hash local files, check archived objects; exit 1 if damage remains"
    )
    verify.add_argument(
        "--repair",
        action="store_true",
        help="restore bad local files from the archive, re-upload bad objects from local files",
    )
    verify.add_argument(
        "--deep", action="store_true", help="download and re-hash objects (default: HEAD checksums)"
    )
    verify.add_argument("--json", action="store_true")

    url = commands.add_parser(
        "url", help="the best URL now: hosted, else a presigned archive URL, else the original"
    )
    url.add_argument("media_id")
    url.add_argument("--json", action="store_true", help="also say which kind and why")
    url.add_argument(
        "--kind",
        choices=["thumbnail", "preview", "optimized", "public"],
        help="the URL of this derivative instead of the original's",
    )

    deriving = commands.add_parser(
        "derive", help="re-queue derivatives (after a change of sizes), with rows of the same bytes"
    )
    deriving.add_argument("--media-id", action="append", default=[], dest="media_ids")
    deriving.add_argument("--post-id")
    deriving.add_argument("--all", action="store_true", help="every row")

    restoring = commands.add_parser(
        "restore", help="bring evicted files back from the archive, each proven by its SHA-256"
    )
    restoring.add_argument("--media-id", action="append", default=[], dest="media_ids")
    restoring.add_argument("--post-id")
    restoring.add_argument("--all", action="store_true", help="every evicted row of this host")
    restoring.add_argument("--json", action="store_true")

    eviction = commands.add_parser(
        "evict", help="delete local copies of archived files, least recently used first"
    )
    eviction.add_argument(
        "--max-bytes", metavar="SIZE", help="e.g. 50GB (default: storage.max_cache_size)"
    )
    eviction.add_argument("--json", action="store_true")
    return parser  # fmt: skip


def _start_workers_as_a_module() -> None:
    """Have the decoder workers start as `python -m mediad` starts them: without running the
    `mediad` console script again.

    multiprocessing runs the main script again in every worker it starts, unless the main
    module is a package's `__main__`; the console script imports this module and with it the
    whole daemon (asyncpg, aiohttp, botocore: 46 MB), which the forkserver then had to hold
    for every worker to share, though no worker ever used any of it. The script's only code is
    the call of this function, so naming `mediad.__main__` (which runs the same) as its module
    changes nothing else. Only the console script is named so: whoever else calls this
    function (a test, a program of one's own) keeps its own `__main__`.
    """
    script = sys.modules.get("__main__")
    if script is None or getattr(script, "__spec__", None) is not None:
        return  # `python -m mediad`, or another package's main
    if getattr(script, "entry", None) is not entry:
        return  # not the `mediad` console script
    script.__spec__ = importlib.util.find_spec("mediad.__main__")


def entry() -> NoReturn:
    """The `mediad` command (the console script and `python -m mediad`): main(), then out.

    When main returns, what the command opened is closed (the daemon's resources by their
    context managers) and its answer is written; the exit handlers still run (they stop an
    embedded PostgreSQL, flush the logs). What is skipped is the interpreter's teardown of every
    module and object left (botocore's models, aiohttp, PyAV: about 0.1 s), which no one waits
    on but a `run --once` in a script.
    """
    code = main()
    atexit._run_exitfuncs()  # what sys.exit would run (CPython's own, undocumented)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    _start_workers_as_a_module()
    args = _parser().parse_args(argv)
    notices: list[str] = []
    try:
        cfg = config.load(config.find_config_path(args.config), notices=notices)
    except errors.ConfigError as exc:
        print(f"mediad: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        logsetup.configure(cfg.log.format, cfg.log.level)
    else:
        # Commands print their answer on stdout; only problems go to stderr.
        logsetup.configure("console", "warning", stream=sys.stderr)
    for notice in notices:
        structlog.get_logger("mediad.config").warning("config_key_retired", notice=notice)
    command = _COMMANDS[args.command]
    try:
        return asyncio.run(command(cfg, args))
    except errors.ConfigError as exc:
        print(f"mediad: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.UsageError as exc:
        print(f"mediad: {exc}", file=sys.stderr)
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
    from mediad import daemon

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


async def _import(cfg: config.Config, args: argparse.Namespace) -> int:
    paths = importer.files_in(args.paths)
    if not paths:
        print(
            f"mediad import: no {'/'.join(importer.SUFFIXES)} files in {args.paths}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    # The bar is for a person watching a terminal; --json and pipes get the summary alone.
    bar = (
        None
        if args.json or not sys.stdout.isatty()
        else progress.ImportProgress(sys.stdout, len(paths))
    )

    def tell(line: str, stream: TextIO) -> None:
        if bar is not None:
            bar.say(line, stream)
        else:
            print(line, file=stream)

    async def work(pool: asyncpg.Pool[Any]) -> int:
        reports = []
        async for report in importer.import_files(pool, paths, bar.add if bar else None):
            reports.append(report)
            if report.error is not None:
                tell(f"mediad import: {report.path}: {report.error}", sys.stderr)
            elif not args.json:
                without = f", {report.without_url} without a URL" if report.without_url else ""
                tell(
                    f"{report.path}: {report.posts} posts, {len(report.queued)} media queued,"
                    f" {report.already_queued} already queued{without}",
                    sys.stdout,
                )
            if bar is not None:
                bar.file_done()
        if bar is not None:
            bar.close()
        if args.json:
            print(json.dumps([r.as_json() for r in reports], indent=2))
        return EXIT_FAILURE if any(r.error is not None for r in reports) else EXIT_OK

    return await _with_pool(cfg, work)


async def _status(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        if args.watch:
            with contextlib.suppress(asyncio.CancelledError):  # a second Ctrl-C: at once
                await watch.watch(pool, sys.stdout, interval=args.interval, as_json=args.json)
            return EXIT_OK
        report = await status.report(pool, post_id=args.post_id)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(status.format_report(report))
        return EXIT_OK

    return await _with_pool(cfg, work)


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
            statuses = "".join(f"{row[d.status_column]:<12}" for d in stages.ALL)
            print(f"{row['media_id']}  {statuses}{row['error_code'] or '-':<16} {row['media_url']}")
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
        analysed = row.pop("ai_analysis")
        for key, value in row.items():
            if value is not None:
                shown = json.dumps(value) if isinstance(value, dict | list) else value
                print(f"{key}: {shown}")
        if analysed:
            print("analysis:")
            print(_format_analysis(analysed))
        print("log:")
        for entry in log_entries:
            details = json.dumps(entry.get("details", {}), sort_keys=True)
            when, event, status = entry.get("timestamp"), entry.get("event"), entry.get("status")
            print(f"  {when}  {event:<24} {status:<8} {details}")
        return EXIT_OK

    return await _with_pool(cfg, work)


def _format_analysis(text: str) -> str:
    """The ai_analysis document for people: its fields one per line, lists joined."""
    try:
        doc = json.loads(text)
    except ValueError:
        return f"  {text}"
    if not isinstance(doc, dict):
        return f"  {text}"
    lines = []
    for key, value in doc.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ", ".join(value)
        elif isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


async def _analyze(cfg: config.Config, args: argparse.Namespace) -> int:
    if not (args.media_id or args.post_id or args.all):
        raise errors.UsageError("analyze: name rows with --media-id, --post-id or --all")

    async def work(pool: asyncpg.Pool[Any]) -> int:
        # Named rows are analysed again whatever became of them; --status narrows the choice.
        statuses = [args.status] if args.status else ["completed", "failed", "skipped"]
        records = await pool.fetch(
            queries.for_stage(stages.ANALYSIS)["requeue"],
            statuses,
            args.media_id or None,
            None,
            args.post_id,
            "mediad analyze",
        )
        ids = [r["media_id"] for r in records]
        if args.json:
            print(json.dumps({"requeued": ids}, indent=2))
        else:
            for media_id in ids:
                print(media_id)
            print(f"re-queued {len(ids)} row(s) for analysis", file=sys.stderr)
        return EXIT_FAILURE if args.media_id and not ids else EXIT_OK

    return await _with_pool(cfg, work)


async def _duplicates(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        found = await duplicates.groups(
            pool, post_id=args.post_id, max_distance=cfg.analysis.near_duplicate_distance
        )
        if args.json:
            print(json.dumps(found, indent=2))
            return EXIT_OK
        for number, group in enumerate(found, 1):
            print(f"group {number}: {len(group)} files")
            for file in group:
                print(f"  {file['sha256'][:16]}  {' '.join(file['media_ids'])}")
        if not found:
            print("no near-duplicates", file=sys.stderr)
        return EXIT_OK

    return await _with_pool(cfg, work)


async def _retry(cfg: config.Config, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool[Any]) -> int:
        statuses = ["failed"]
        if args.media_id and not args.failed:
            # Naming one row means "do it again", whatever became of it (unless in flight).
            statuses = ["failed", "completed", "skipped", "not_started"]
        records = await pool.fetch(
            queries.for_stage(stages.named(args.stage))["requeue"],
            statuses,
            [args.media_id] if args.media_id else None,
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


def _archive_configured(cfg: config.Config) -> bool:
    return cfg.archive.enabled or bool(cfg.archive.bucket)


async def _verify(cfg: config.Config, args: argparse.Namespace) -> int:
    from mediad.commands import derive as derive_commands
    from mediad.commands import verify
    from mediad.stages import archive
    from mediad.storage import s3

    async def work(pool: asyncpg.Pool[Any]) -> int:
        store = Store.from_config(cfg.storage)
        async with contextlib.AsyncExitStack() as stack:
            client = archiver = None
            stray: list[str] = []
            if _archive_configured(cfg):
                client = await stack.enter_async_context(s3.open_client(cfg.archive))
                archiver = archive.Archiver(cfg.archive, client, store)
                stray = await archiver.abort_stray_uploads()
            report = await verify.verify(
                pool, store, client, archiver,
                repair=args.repair, deep=args.deep, progress=_Progress(sys.stderr),
            )  # fmt: skip
            rederive = _rederive(cfg, store, pool, client, stack) if args.repair else None
            await derive_commands.check(pool, store, report, rederive=rederive)
        if args.json:
            print(json.dumps({**report.as_json(), "stray_uploads_aborted": len(stray)}, indent=2))
        else:
            print(_format_verify(report))
            if stray:
                print(f"stray multipart uploads aborted (over a day old): {len(stray)}")
        return EXIT_FAILURE if report.remaining else EXIT_OK

    return await _with_pool(cfg, work)


def _rederive(
    cfg: config.Config,
    store: Store,
    pool: asyncpg.Pool[Any],
    client: s3.S3 | None,
    stack: contextlib.AsyncExitStack,
) -> Callable[[Row], Awaitable[Result]]:
    """verify --repair's way to make a damaged derivative again: the derive stage's own, its
    decoder workers started on first use."""
    from mediad.media.decoders import DecoderPool
    from mediad.stages import derive

    opened: list[derive.Deriver] = []

    async def archive() -> s3.S3 | None:
        return client

    async def rederive(row: Row) -> Result:
        if not opened:
            decoders = await stack.enter_async_context(DecoderPool.open(cfg.media))
            archived = archive if client is not None else None
            opened.append(
                derive.Deriver(cfg.derive, store, decoders, pool, archive=archived,
                               storage_node=store.node)
            )  # fmt: skip
        return await opened[0].rederive(row)

    return rederive


class _Progress:
    """verify's progress on stderr, at most once a second (and at the end)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = 0.0

    def __call__(self, progress: verify.Progress) -> None:
        now = time.monotonic()
        if now - self._last < 1.0 and progress.groups_done < progress.groups_total:
            return
        self._last = now
        print(
            f"verify: {progress.groups_done}/{progress.groups_total} files,"
            f" {progress.local_checked} local copies and {progress.objects_checked} objects"
            " checked",
            file=self._stream,
            flush=True,
        )


def _format_verify(report: verify.Report) -> str:
    how = "downloaded and re-hashed" if report.deep else "HEAD: size and checksums"
    lines = [
        f"local files checked: {report.local_checked}",
        f"archived objects checked: {report.objects_checked} ({how})",
    ]
    if report.unverifiable:
        lines.append(f"objects without a checksum to compare: {report.unverifiable} (use --deep)")
    if report.other_store:
        lines.append(f"rows with files outside this store (not checked): {report.other_store}")
    if report.restored:
        lines.append(f"evicted rows given back their bytes, local again: {report.restored}")
    lines.append(f"derived files checked: {report.derivatives_checked}")
    problems = report.by_kind()
    if problems:
        lines.append(f"{'problem':<18}{'found':>7}{'repaired':>10}")
        for kind, (found, repaired) in problems.items():
            lines.append(f"{kind:<18}{found:>7}{repaired:>10}")
    else:
        lines.append("no problems found")
    for damage in report.remaining:
        lines.append(f"  {damage.kind}: {damage.where} ({damage.detail}) rows {damage.media_ids}")
    lines.append(f"damage remaining: {len(report.remaining)}")
    return "\n".join(lines)


async def _url(cfg: config.Config, args: argparse.Namespace) -> int:
    from mediad.commands import url
    from mediad.storage import s3

    async def work(pool: asyncpg.Pool[Any]) -> int:
        async with contextlib.AsyncExitStack() as stack:
            client: s3.S3 | None = None

            async def presign(bucket: str, key: str, seconds: float) -> str:
                nonlocal client
                if client is None:
                    client = await stack.enter_async_context(s3.open_client(cfg.archive))
                return await client.presign_get(key, bucket, seconds)

            signer = presign if _archive_configured(cfg) else None
            try:
                if args.kind:
                    best = await url.derivative_url(
                        pool, args.media_id, args.kind, presign=signer,
                        expiry=cfg.archive.presign_expiry,
                    )  # fmt: skip
                else:
                    best = await url.best_url(
                        pool, args.media_id, presign=signer, expiry=cfg.archive.presign_expiry
                    )
            except (url.UnknownMediaError, url.NoDerivativeError) as exc:
                print(f"mediad: {exc}", file=sys.stderr)
                return EXIT_FAILURE
        if args.json:
            listed = {"derivatives": await url.derivatives_of(pool, args.media_id)}
            print(json.dumps(best.as_json() | listed, indent=2))
        else:
            print(best.url)
        return EXIT_OK

    return await _with_pool(cfg, work)


async def _evict(cfg: config.Config, args: argparse.Namespace) -> int:
    if args.max_bytes is not None:
        try:
            limit: int | None = config.parse_size(args.max_bytes)
        except ValueError as exc:
            raise errors.ConfigError(f"--max-bytes: {exc}") from None
    else:
        limit = cfg.storage.max_cache_size
    if limit is None:
        raise errors.ConfigError("evict: give --max-bytes or set storage.max_cache_size")
    if not _archive_configured(cfg):
        raise errors.ConfigError("evict: archive.bucket is empty; only archived files are evicted")

    from mediad.commands import evict
    from mediad.storage import s3

    async def work(pool: asyncpg.Pool[Any]) -> int:
        async with s3.open_client(cfg.archive) as client:
            report = await evict.evict(
                pool, Store.from_config(cfg.storage), client, limit, by="mediad evict"
            )
        if args.json:
            print(json.dumps(vars(report), indent=2))
        else:
            print(
                f"evicted {report.evicted} file(s), {report.freed} bytes; the store holds"
                f" {report.after} bytes (limit {report.limit})"
            )
            for url in report.archive_damaged:
                print(f"kept (its archived copy is damaged): {url}")
        if report.after > limit:
            print(
                "mediad: the store is still over the limit: the rest is not archived, or still"
                " needed by a stage",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        return EXIT_OK

    return await _with_pool(cfg, work)


async def _derive(cfg: config.Config, args: argparse.Namespace) -> int:
    if not (args.media_ids or args.post_id or args.all):
        raise errors.ConfigError("derive: name --media-id, --post-id or --all")
    from mediad.commands import derive as derive_commands

    async def work(pool: asyncpg.Pool[Any]) -> int:
        requeued = await derive_commands.requeue(
            pool, media_ids=args.media_ids, post_id=args.post_id, everything=args.all
        )
        for media_id in requeued:
            print(media_id)
        print(f"re-queued {len(requeued)} row(s) for derive", file=sys.stderr)
        return EXIT_FAILURE if args.media_ids and not requeued else EXIT_OK

    return await _with_pool(cfg, work)


async def _restore(cfg: config.Config, args: argparse.Namespace) -> int:
    if not (args.media_ids or args.post_id or args.all):
        raise errors.ConfigError("restore: name --media-id, --post-id or --all")
    if not _archive_configured(cfg):
        raise errors.ConfigError("restore: archive.bucket is empty; nothing to restore from")

    from mediad.commands import restore
    from mediad.storage import s3

    async def work(pool: asyncpg.Pool[Any]) -> int:
        async with s3.open_client(cfg.archive) as client:
            report = await restore.restore(
                pool, Store.from_config(cfg.storage), client,
                media_ids=args.media_ids, post_id=args.post_id, everything=args.all,
            )  # fmt: skip
        if args.json:
            print(json.dumps(report.as_json(), indent=2))
        else:
            for media_id in report.restored:
                print(media_id)
            for media_id, code in report.failed.items():
                print(f"mediad: {media_id} not restored: {code}", file=sys.stderr)
            print(f"restored {len(report.restored)} row(s)", file=sys.stderr)
        return EXIT_FAILURE if report.failed else EXIT_OK

    return await _with_pool(cfg, work)


_COMMANDS: dict[str, Callable[[config.Config, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": _run,
    "migrate": _migrate,
    "enqueue": _enqueue,
    "import": _import,
    "status": _status,
    "list": _list,
    "show": _show,
    "retry": _retry,
    "analyze": _analyze,
    "duplicates": _duplicates,
    "verify": _verify,
    "url": _url,
    "evict": _evict,
    "derive": _derive,
    "restore": _restore,
}

"""`mediad status` at scale: report() against the full scan it replaced, and a 1M-row insert
with mediad's triggers against the same insert with the per-row triggers they replaced and
into a table with no trigger at all.

    .venv/bin/python benchmarks/status.py [--rows 1000000] [--queued 10000] [--rounds 5]

One embedded PostgreSQL in a temporary directory. `post_media` gets `--rows` finished rows (1%
failed, the rest completed, each with a four-event log) in one INSERT ... SELECT, then
`--queued` new rows. Two copies of the table with the same columns, defaults and indexes
(`LIKE post_media INCLUDING ALL`) get the same rows first, one round each, as the insert's
peers: one with the row triggers mediad had before (the platform trigger and a NOTIFY per
row), one with no trigger. `status.report()` (what `mediad status`, /metrics and the
dashboard call) is then timed against the full-scan queries it replaced, in alternating
rounds, medians reported; its figures are checked against a `count(*) ... GROUP BY` of the
table, and the queued rows' insert must have sent one NOTIFY. Then the daemon's HTTP endpoint
(mediad/http, as `mediad run` serves it, with the row counts never cached) is timed over real
HTTP: the dashboard's front page and a /metrics scrape, each a fresh read of the database, in
alternating rounds; and the `mediad status` command from spawn to exit beside `mediad --help`, the
interpreter's start and imports that every command pays whatever the table holds. Exits 1 when
report(), the front page or /metrics takes 200 ms or more, or a check fails.
"""

# ruff: noqa: E402 (the imports must follow the sys.path repair below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's own directory would come first on sys.path, and the sibling
# benchmark `queue.py` would then shadow the standard library's queue (asyncio's threads use it).
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
sys.path.insert(0, str(_REPO))

import argparse
import asyncio
import subprocess
import tempfile
import time
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import postgres, programs, report, targets
from mediad import config, db, queries, stages
from mediad.commands import status
from mediad.http import server
from mediad.resources import Resources

TARGET_STATUS_MS = 200.0

# A finished row as the stages leave it: downloaded (1 in 100 failed http_404), derived,
# archive and analysis skipped, with the events a real row carries.
INSERT_FINISHED = """
INSERT INTO {table} (post_id, media_url, media_type, platform, download_status, archive_status,
    ai_analysis_status, derive_status, error_code, sha256_sum, md5_sum, file_size, mime_type,
    local_file_path, hosted_url, thumbnail_url, downloaded_at, ai_analysis_log)
SELECT 'post-' || (i / 4), 'https://pbs.twimg.com/media/bench-' || i || '.jpg', 'image',
    'twitter',
    CASE WHEN failed THEN 'failed' ELSE 'completed' END,
    CASE WHEN failed THEN 'not_started' ELSE 'skipped' END,
    CASE WHEN failed THEN 'not_started' ELSE 'skipped' END,
    CASE WHEN failed THEN 'not_started' ELSE 'completed' END,
    CASE WHEN failed THEN 'http_404' END,
    sha, left(sha, 32), 100000 + i % 50000, 'image/jpeg',
    '/var/media/images/' || left(sha, 2) || '/' || sha || '.jpg',
    'https://media.example/images/' || left(sha, 2) || '/' || sha || '.jpg',
    CASE WHEN NOT failed
        THEN 'https://media.example/derived/thumbnail/' || left(sha, 2) || '/' || sha || '.webp'
    END,
    now(), $2::jsonb
FROM generate_series(1, $1::integer) AS i,
LATERAL (SELECT i % 100 = 0 AS failed, md5(i::text) || md5((-i)::text) AS sha) AS r
"""

INSERT_QUEUED = """
INSERT INTO {table} (post_id, media_url, media_type)
SELECT 'queued-' || i, 'https://pbs.twimg.com/media/queued-' || i || '.jpg', 'image'
FROM generate_series(1, $1::integer) AS i
"""

EVENTS = """[
 {"event": "download_started", "status": "info", "timestamp": "2026-11-21T10:30:00.000000Z",
  "details": {"attempt": 1, "worker": "archive-host-1:4242:ab12"}},
 {"event": "media_downloaded", "status": "success", "timestamp": "2026-11-21T10:30:00.200000Z",
  "details": {"file_size": 102400, "mime_type": "image/jpeg", "deduplicated": false,
   "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
   "final_url": "https://pbs.twimg.com/media/bench.jpg", "seconds": 0.18}},
 {"event": "archive_skipped", "status": "info", "timestamp": "2026-11-21T10:30:00.200000Z",
  "details": {"reason": "archive.enabled is false"}},
 {"event": "derivatives_created", "status": "success", "timestamp": "2026-11-21T10:30:01.0Z",
  "details": {"kinds": ["optimized", "preview", "public", "thumbnail"], "seconds": 0.4}}
]"""

# What `status` ran before the counting triggers: two full scans of post_media per call.
FULL_SCAN_COUNTS = """
SELECT stage, status, count(*) AS rows,
    count(*) FILTER (WHERE due) AS due,
    count(*) FILTER (WHERE leased) AS leased
FROM post_media,
LATERAL (VALUES {values}) AS s(stage, status, due, leased)
GROUP BY stage, status
"""
FULL_SCAN_FAILURES = """
SELECT stage, coalesce(error_code, 'unknown') AS error_code, count(*) AS rows
FROM post_media,
LATERAL (VALUES {values}) AS s(stage, status)
WHERE status = 'failed'
GROUP BY stage, error_code
"""


# The row triggers the statement triggers replaced, on a copy of the table.
PER_ROW_TRIGGERS = """
CREATE FUNCTION bench_notify_per_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{checks}
    RETURN NULL;
END
$$;
CREATE TRIGGER bench_before_insert BEFORE INSERT ON {table}
    FOR EACH ROW EXECUTE FUNCTION mediad_before_insert();
CREATE TRIGGER bench_notify_per_row AFTER INSERT OR UPDATE OF {columns} ON {table}
    FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION bench_notify_per_row();
"""
PER_ROW_CHECK = """
    IF NEW.{stage}_queued AND NEW.{status} = 'not_started'
       AND (TG_OP = 'INSERT' OR NOT OLD.{stage}_queued OR OLD.{status} <> 'not_started') THEN
        PERFORM pg_notify('mediad', '{stage}');
    END IF;"""


def _per_row_triggers(table: str) -> str:
    checks = "".join(PER_ROW_CHECK.format(stage=d.name, status=d.status_column) for d in stages.ALL)
    when = " OR ".join(
        f"(NEW.{d.name}_queued AND NEW.{d.status_column} = 'not_started')" for d in stages.ALL
    )
    columns = ", ".join(d.status_column for d in stages.ALL)
    return PER_ROW_TRIGGERS.format(checks=checks, table=table, columns=columns, when=when)


async def _get_ms(session: aiohttp.ClientSession, url: str) -> tuple[float, str]:
    """Milliseconds of one GET until its whole body is read, and the body."""
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.text()
        response.raise_for_status()
    return (time.perf_counter() - started) * 1000, body


def _metrics_rows(body: str) -> int:
    """The rows /metrics says post_media holds (its download stage's rows over every status)."""
    total = 0.0
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "mediad_rows" and sample.labels.get("stage") == "download":
                total += sample.value
    return int(total)


async def _endpoint_ms(url: str, rounds: int) -> tuple[list[float], list[float], bool]:
    """The front page's and /metrics' milliseconds over `rounds` alternating rounds, as `mediad
    run` serves them with the row counts never cached; and whether both showed the rows that
    report() counts (the page its completed downloads, /metrics every row)."""
    with tempfile.TemporaryDirectory(prefix="mediad-bench-status-") as root:
        env = {
            "MEDIAD_HTTP_LISTEN": "127.0.0.1:0",
            "MEDIAD_HTTP_COUNTS_MAX_AGE": "0s",
            "MEDIAD_STORAGE_ROOT": root,
        }
        cfg = config.load(None, env=env)
        async with (
            Resources.open(cfg, url, owner="bench", pool_size=2) as resources,
            server.serving(resources, url, stages.ALL, pools=[]) as base,
            aiohttp.ClientSession() as session,
        ):
            assert base is not None
            counted = (await status.report(resources.pool))["stages"]["download"]["rows"]
            completed_cell = f'<td class="n">{counted["completed"]}</td>'
            page: list[float] = []
            scrape: list[float] = []
            ok = True
            for _ in range(rounds):
                ms, html = await _get_ms(session, base + "/")
                page.append(ms)
                ms, text = await _get_ms(session, base + "/metrics")
                scrape.append(ms)
                ok = ok and completed_cell in html and _metrics_rows(text) == sum(counted.values())
    return page, scrape, ok


def _command_ms(url: str, rounds: int) -> tuple[list[float], list[float]]:
    """Milliseconds, spawn to exit, of the `mediad status --json` command and of `mediad --help`
    (the interpreter's start and the imports alone), in alternating rounds."""
    env = programs.clean_environment({"MEDIAD_DATABASE_URL": url})
    status_command = [*programs.mediad_command(), "status", "--json"]
    help_command = [*programs.mediad_command(), "--help"]
    whole: list[float] = []
    start_only: list[float] = []
    for _ in range(rounds):
        for argv, times in ((status_command, whole), (help_command, start_only)):
            started = time.perf_counter()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            times.append((time.perf_counter() - started) * 1000)
    return whole, start_only


def _full_scan_sql() -> tuple[str, str]:
    """The two queries the old `report()` ran, for the stages declared now."""
    counts = ", ".join(
        f"('{d.name}', {d.status_column}, {queries._fragment('due', d)},"
        f" {d.status_column} = 'started' AND {d.name}_lease_expires_at > now())"
        for d in stages.ALL
    )
    failures = ", ".join(f"('{d.name}', {d.status_column})" for d in stages.ALL)
    return FULL_SCAN_COUNTS.format(values=counts), FULL_SCAN_FAILURES.format(values=failures)


async def _timed_insert(url: str, sql: str, rows: int) -> tuple[float, int]:
    """Seconds of one INSERT ... SELECT, and the NOTIFYs it sent."""
    notified: list[str] = []
    listener = await asyncpg.connect(url)
    await listener.add_listener("mediad", lambda *args: notified.append(str(args[3])))
    try:
        async with postgres.connection(url) as conn:
            started = time.perf_counter()
            await conn.execute(sql, rows, *([EVENTS] if "$2" in sql else []))
            seconds = time.perf_counter() - started
        # A round trip on the listener's own connection delivers what was sent before it.
        await listener.execute("SELECT 1")
    finally:
        await listener.close()
    return seconds, len(notified)


async def _report_ms(pool: asyncpg.Pool[Any]) -> float:
    started = time.perf_counter()
    await status.report(pool)
    return (time.perf_counter() - started) * 1000


async def _full_scan_ms(pool: asyncpg.Pool[Any], sql: tuple[str, str]) -> float:
    started = time.perf_counter()
    for query in sql:
        await pool.fetch(query)
    return (time.perf_counter() - started) * 1000


async def _check(pool: asyncpg.Pool[Any], sql: tuple[str, str]) -> tuple[bool, str]:
    """report()'s figures equal the full scan's."""
    got = await status.report(pool)
    counts = await pool.fetch(sql[0])
    failures = await pool.fetch(sql[1])
    expected_rows: dict[str, dict[str, int]] = {d.name: {} for d in stages.ALL}
    for r in counts:
        expected_rows[r["stage"]][r["status"]] = r["rows"]
    expected_failures = sorted((r["stage"], r["error_code"], r["rows"]) for r in failures)
    got_rows = {name: entry["rows"] for name, entry in got["stages"].items()}
    got_failures = sorted((f["stage"], f["error_code"], f["rows"]) for f in got["failures"])
    ok = got_rows == expected_rows and got_failures == expected_failures
    return ok, f"rows per stage and status: {got_rows}; failures: {got_failures}"


async def main(rows: int, queued: int, rounds: int) -> int:
    verdict = targets.Verdict()
    print(f"{rows:,} finished rows and {queued:,} queued; {report.machine()}")
    with postgres.embedded() as server:
        url = await server.create_mediad_database("bench_status")
        tables = {
            "post_media (mediad's statement triggers)": "post_media",
            "the row triggers they replaced": "post_media_per_row",
            "no trigger": "post_media_bare",
        }
        async with postgres.connection(url) as conn:
            for table in ("post_media_per_row", "post_media_bare"):
                await conn.execute(f"CREATE TABLE {table} (LIKE post_media INCLUDING ALL)")
            await conn.execute(_per_row_triggers("post_media_per_row"))
        results = []
        # The peers first, each dropped once measured (the disk holds one copy at a time).
        for label, table in reversed(tables.items()):
            finished = await _timed_insert(url, INSERT_FINISHED.format(table=table), rows)
            queued_rows = await _timed_insert(url, INSERT_QUEUED.format(table=table), queued)
            results.append((label, finished, queued_rows))
            if table != "post_media":
                async with postgres.connection(url) as conn:
                    await conn.execute(f"DROP TABLE {table}")
        await postgres.vacuum_analyze(url)
        by_label = {label: (f, q) for label, f, q in results}
        mediad_s = by_label["post_media (mediad's statement triggers)"][0][0]
        notifies = by_label["post_media (mediad's statement triggers)"][1][1]
        verdict.check([notifies == 1])
        report.print_table(
            "INSERT ... SELECT, one statement each",
            ["table", f"{rows:,} rows: s", "rows/s", f"{queued:,} queued: s", "NOTIFYs"],
            [
                [label, f[0], report.rate(rows, f[0]), q[0], q[1] if "bare" not in label else "-"]
                for label, (f, q) in by_label.items()
            ],
        )
        for label, (f, _) in by_label.items():
            if f[0] != mediad_s:
                print(f"insert with mediad's triggers / {label}: "
                      f"{report.ratio(mediad_s, f[0]):.2f}x the time")  # fmt: skip

        sql = _full_scan_sql()
        pool = await db.create_pool(url, max_size=2)
        try:
            ok, check = await _check(pool, sql)
            verdict.check([ok])
            print(f"\ncheck {'ok' if ok else 'FAILED'}: {check}")
            mine: list[float] = []
            peer: list[float] = []
            for _ in range(rounds):
                mine.append(await _report_ms(pool))
                peer.append(await _full_scan_ms(pool, sql))
        finally:
            await pool.close()
        command, start_only = await asyncio.to_thread(_command_ms, url, rounds)
        page, scrape, shown = await _endpoint_ms(url, rounds)
        verdict.check([shown])
        print(f"front page and /metrics show report()'s counts: {'ok' if shown else 'FAILED'}")
    mine_ms, peer_ms = report.median(mine), report.median(peer)
    page_ms, scrape_ms = report.median(page), report.median(scrape)
    report.print_table(
        f"status figures, median of {rounds} alternating rounds",
        ["how", "ms", "min ms", "max ms"],
        [
            ["report() (counts table + queue indexes)", mine_ms, min(mine), max(mine)],
            ["the full scans it replaced", peer_ms, min(peer), max(peer)],
            ["GET / (the dashboard's front page)", page_ms, min(page), max(page)],
            ["GET /metrics (counts never cached)", scrape_ms, min(scrape), max(scrape)],
            ["`mediad status --json`, spawn to exit", report.median(command), min(command),
             max(command)],
            ["`mediad --help` (its start-up alone)", report.median(start_only), min(start_only),
             max(start_only)],
        ],
    )  # fmt: skip
    print(f"report() / full scan: {report.ratio(mine_ms, peer_ms):.4f}x the time")
    judged = [
        verdict.judge(targets.Target(measure, ms, TARGET_STATUS_MS, unit=" ms", below=True))
        for measure, ms in [
            ("mediad status (report()) at this size", mine_ms),
            ("the dashboard's front page", page_ms),
            ("a /metrics scrape", scrape_ms),
        ]
    ]
    verdict.print_targets("targets", judged)
    return verdict.exit_status()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    report.quiet_logging()
    sys.exit(asyncio.run(main(args.rows, args.queued, args.rounds)))

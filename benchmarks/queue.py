"""Queue throughput and pickup latency: mediad against pgqueuer and procrastinate.

    .venv/bin/python benchmarks/queue.py [--rows 20000]

One embedded PostgreSQL in a temporary directory; each system gets a fresh database on it.
Throughput is rows (jobs) per second from the start of consumption until every row is
finished in the database, with a no-op stage/task. For mediad that includes the lease and the
JSONB events written on claim and on completion, which the script then checks row by row.
Latency is the delay from an INSERT's commit to `process()` starting in an idle daemon that
only NOTIFY can wake (the poll interval stays at its 5 s default). The script exits 1 when a
run fails its check or a target is missed.
"""

# ruff: noqa: E402 (the imports must follow the sys.path repair below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's own directory would come first on sys.path, and this module,
# named `queue`, would then shadow the standard library's (asyncio and logging import it).
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
sys.path.insert(0, str(_REPO))

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import pstats
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

from benchmarks.harness import measure, postgres, report, targets
from mediad import config, daemon, stage
from mediad.config import Config
from tests import support

# mediad's target against pgqueuer, on the same database server and job shape, with every lease
# and event written (1.5 until the row counts, the dashboard and the event log grew; 1.1 since).
TARGET_RATIO = 1.1
TARGET_LATENCY_MS = 20.0
EXPECTED_EVENTS = ["download_started", "media_downloaded", "archive_skipped", "ai_analysis_skipped"]

INSERT_ROWS = """
INSERT INTO post_media (post_id, media_url, media_type)
SELECT 'post-' || i, 'https://pbs.twimg.com/media/bench-' || i || '.jpg', 'image'
FROM generate_series(1, $1::integer) AS i
"""

# Every row finished exactly once, with its full event log and no lease left behind.
CHECK_ROWS = """
SELECT count(*) AS total,
    count(*) FILTER (WHERE download_status = 'completed') AS completed,
    count(*) FILTER (WHERE archive_status = 'skipped' AND ai_analysis_status = 'skipped')
        AS skipped,
    count(*) FILTER (WHERE download_attempts = 1) AS one_attempt,
    count(*) FILTER (WHERE download_lease_owner IS NULL AND download_lease_expires_at IS NULL
        AND download_next_attempt_at IS NULL) AS lease_cleared,
    count(*) FILTER (WHERE downloaded_at IS NOT NULL) AS downloaded_at,
    count(*) FILTER (WHERE ARRAY(
        SELECT e ->> 'event' FROM jsonb_array_elements(ai_analysis_log) WITH ORDINALITY AS t(e, n)
        ORDER BY n) = $1::text[]) AS events_in_order,
    count(*) FILTER (WHERE (
        SELECT count(*) FROM jsonb_array_elements(ai_analysis_log) AS e
        WHERE e ->> 'event' IN ('download_started', 'media_downloaded')) = 2) AS two_stage_events,
    count(*) FILTER (WHERE ai_analysis_log -> 0 ->> 'status' = 'info'
        AND ai_analysis_log -> 1 ->> 'status' = 'success'
        AND ai_analysis_log -> 0 -> 'details' ->> 'worker' IS NOT NULL
        AND ai_analysis_log -> 0 ->> 'timestamp' LIKE '____-__-__T__:__:__.______Z')
        AS events_well_formed
FROM post_media
"""


@dataclass
class Throughput:
    """One system's drain of `rows` jobs."""

    system: str
    setting: str
    rows: int
    seconds: float
    ok: bool
    check: str
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    wal_bytes: int = 0

    @property
    def rate(self) -> float:
        return report.rate(self.rows, self.seconds)

    @property
    def pg_us_per_row(self) -> float:
        return self.server_cpu / self.rows * 1e6 if self.rows else math.nan

    @property
    def client_us_per_row(self) -> float:
        return self.client_cpu / self.rows * 1e6 if self.rows else math.nan

    @property
    def wal_per_row(self) -> float:
        return self.wal_bytes / self.rows if self.rows else math.nan


@dataclass
class Latency:
    samples_ms: list[float] = field(default_factory=list)
    from_send_ms: list[float] = field(default_factory=list)
    missed: int = 0


# --- mediad ------------------------------------------------------------------------------


def mediad_config(url: str, state_dir: Path, concurrency: int, claim_batch: int) -> Config:
    return config.load(
        None,
        env={
            "MEDIAD_DATABASE_URL": url,
            "MEDIAD_DAEMON_STATE_DIR": str(state_dir),
            "MEDIAD_STORAGE_ROOT": str(state_dir / "media"),
            "MEDIAD_DOWNLOAD_CONCURRENCY": str(concurrency),
            "MEDIAD_DAEMON_CLAIM_BATCH": str(claim_batch),
            "MEDIAD_LOG_LEVEL": "warning",
        },
    )


async def noop(row: stage.Row) -> stage.Result:
    return stage.Result()


async def bench_mediad(
    server: postgres.Server,
    state_dir: Path,
    rows: int,
    concurrency: int,
    claim_batch: int,
    profile: bool,
) -> Throughput:
    name = f"bench_mediad_c{concurrency}"
    url = await server.create_mediad_database(name)
    async with postgres.connection(url) as conn:
        await conn.execute(INSERT_ROWS, rows)
    await postgres.vacuum_analyze(url)

    cfg = mediad_config(url, state_dir, concurrency, claim_batch)
    profiler = cProfile.Profile() if profile else None
    account = measure.CpuAccount({}, {"PostgreSQL": server.pid})
    wal0 = await server.wal_bytes()
    with account.measure() as split, measure.timed() as sw:
        if profiler is not None:
            profiler.enable()
        await daemon.run(cfg, once=True, url=url, openers=support.trivial_openers(noop))
        if profiler is not None:
            profiler.disable()
    wal = await server.wal_bytes() - wal0

    ok, check = await check_mediad(url, rows)
    await server.drop_database(name)
    if profiler is not None:
        print_profile(profiler, f"mediad, concurrency {concurrency}")
    return Throughput(
        "mediad",
        f"concurrency {concurrency}, claim_batch {claim_batch}",
        rows,
        sw.elapsed,
        ok,
        check,
        split.own,
        split.services["PostgreSQL"],
        wal,
    )


async def check_mediad(url: str, rows: int) -> tuple[bool, str]:
    async with postgres.connection(url) as conn:
        record = await conn.fetchrow(CHECK_ROWS, EXPECTED_EVENTS)
    assert record is not None
    counts = dict(record.items())
    ok = all(value == rows for value in counts.values())
    detail = ", ".join(f"{key}={value}" for key, value in counts.items())
    return ok, detail


def print_profile(profiler: cProfile.Profile, title: str, limit: int = 25) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(limit)
    print(f"\n--- cProfile of {title} (by own time) ---")
    print("\n".join(out.getvalue().splitlines()[: limit + 12]))


# --- pgqueuer ----------------------------------------------------------------------------


def job_payloads(rows: int) -> list[dict[str, Any]]:
    """The same job as a post_media row: what a no-op stage would receive."""
    return [
        {
            "post_id": f"post-{i}",
            "media_url": f"https://pbs.twimg.com/media/bench-{i}.jpg",
            "media_type": "image",
        }
        for i in range(1, rows + 1)
    ]


async def bench_pgqueuer(
    server: postgres.Server, rows: int, batch_size: int, consumers: int
) -> Throughput:
    from pgqueuer import AsyncpgDriver, QueueManager, types
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    name = f"bench_pgqueuer_w{consumers}"
    url = await server.create_database(name)
    async with postgres.connection(url) as setup:
        queries = Queries(AsyncpgDriver(setup))
        await queries.install()
        payloads = [json.dumps(p).encode() for p in job_payloads(rows)]
        await queries.enqueue(["noop"] * rows, list(payloads), [0] * rows)
    await postgres.vacuum_analyze(url)

    # pgqueuer's own drain benchmark: several consumers, each a QueueManager on its own
    # asyncpg connection, in drain mode (each returns once the queue is empty).
    connections = [await asyncpg.connect(url) for _ in range(consumers)]
    done = 0
    last_call = 0.0
    managers: list[QueueManager] = []
    for conn in connections:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def entry(job: Job) -> None:
            nonlocal done, last_call
            done += 1
            last_call = time.perf_counter()

        managers.append(qm)

    account = measure.CpuAccount({}, {"PostgreSQL": server.pid})
    wal0 = await server.wal_bytes()
    try:
        # Timed until every QueueManager has returned: by then each job's outcome is written
        # (deleted from the queue, logged), as mediad's are when `run --once` returns.
        with account.measure() as split, measure.timed() as sw:
            await asyncio.gather(
                *(
                    qm.run(
                        batch_size=batch_size,
                        mode=types.QueueExecutionMode.drain,
                        dequeue_timeout=timedelta(seconds=5),
                    )
                    for qm in managers
                )
            )
    finally:
        for conn in connections:
            await conn.close()
    wal = await server.wal_bytes() - wal0

    async with postgres.connection(url) as conn:
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        logged = await conn.fetchval(
            "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
        )
    await server.drop_database(name)
    ok = done == rows and left == 0 and logged == rows
    check = (
        f"entrypoint calls={done} (last at {last_call - sw.started:.2f} s), "
        f"left in queue={left}, logged successful={logged}"
    )
    return Throughput(
        "pgqueuer",
        f"batch_size {batch_size}, {consumers} consumer(s)",
        rows,
        sw.elapsed,
        ok,
        check,
        split.own,
        split.services["PostgreSQL"],
        wal,
    )


# --- procrastinate -----------------------------------------------------------------------


async def bench_procrastinate(
    server: postgres.Server, rows: int, concurrency: int, pool_size: int
) -> Throughput:
    import procrastinate

    name = f"bench_procrastinate_c{concurrency}"
    url = await server.create_database(name)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=pool_size, max_size=pool_size
        )
    )
    done = 0

    @app.task(name="noop")
    async def noop_task(post_id: str, media_url: str, media_type: str) -> None:
        nonlocal done
        done += 1

    account = measure.CpuAccount({}, {"PostgreSQL": server.pid})
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await noop_task.batch_defer_async(*job_payloads(rows))
        await postgres.vacuum_analyze(url)
        wal0 = await server.wal_bytes()
        # wait=False: the worker returns once no job is left and its running jobs are done.
        with account.measure() as split, measure.timed() as sw:
            await app.run_worker_async(
                concurrency=concurrency,
                wait=False,
                install_signal_handlers=False,
                listen_notify=False,
            )
        wal = await server.wal_bytes() - wal0
    async with postgres.connection(url) as conn:
        succeeded = await conn.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
    await server.drop_database(name)
    ok = done == rows and succeeded == rows
    return Throughput(
        "procrastinate",
        f"concurrency {concurrency}, pool {pool_size}",
        rows,
        sw.elapsed,
        ok,
        f"task calls={done}, jobs succeeded={succeeded}",
        split.own,
        split.services["PostgreSQL"],
        wal,
    )


# --- latency -----------------------------------------------------------------------------


async def bench_latency(
    server: postgres.Server, state_dir: Path, samples: int, warmup: int
) -> Latency:
    url = await server.create_mediad_database("bench_mediad_latency")
    conn = await asyncpg.connect(url)

    started: dict[str, float] = {}
    arrived: dict[str, asyncio.Event] = {}

    async def record(row: stage.Row) -> stage.Result:
        now = time.perf_counter()
        key = row.post_id or ""
        started.setdefault(key, now)
        if key in arrived:
            arrived[key].set()
        return stage.Result()

    cfg = mediad_config(url, state_dir, concurrency=16, claim_batch=100)
    assert cfg.daemon.poll_interval == 5.0
    stop = asyncio.Event()
    runner = asyncio.create_task(
        daemon.run(cfg, url=url, openers=support.trivial_openers(record), stop=stop)
    )
    result = Latency()
    try:
        for i in range(warmup + samples):
            key = f"latency-{i}"
            arrived[key] = asyncio.Event()
            sent = time.perf_counter()
            await conn.execute(
                "INSERT INTO post_media (post_id, media_url, media_type) VALUES ($1, $2, 'image')",
                key,
                f"https://pbs.twimg.com/media/{key}.jpg",
            )
            committed = time.perf_counter()
            # Polling alone would take up to 5 s; 10 s without a pickup means the row was lost.
            waiter = asyncio.create_task(arrived[key].wait())
            await asyncio.wait({waiter, runner}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if runner.done():
                runner.result()  # the daemon died: raise why
                raise RuntimeError("the daemon stopped during the latency benchmark")
            if key not in started:
                result.missed += 1
            elif i >= warmup:
                result.samples_ms.append((started[key] - committed) * 1000)
                result.from_send_ms.append((started[key] - sent) * 1000)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await runner
        await conn.close()
    await server.drop_database("bench_mediad_latency")
    return result


# --- main --------------------------------------------------------------------------------


def parse_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20_000, help="jobs per system (20000)")
    parser.add_argument(
        "--mediad-concurrency",
        type=parse_ints,
        default=[100, 500],
        help="comma-separated download.concurrency values (100,500)",
    )
    parser.add_argument("--claim-batch", type=int, default=100, help="daemon.claim_batch (100)")
    parser.add_argument("--pgqueuer-batch", type=int, default=100, help="batch_size (100)")
    parser.add_argument(
        "--pgqueuer-consumers",
        type=parse_ints,
        default=[1, 5],
        help="QueueManagers, one asyncpg connection each (1,5; pgqueuer's own benchmark: 5)",
    )
    parser.add_argument("--procrastinate-concurrency", type=int, default=10)
    parser.add_argument("--procrastinate-pool", type=int, default=10)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="interleaved runs of each mediad and pgqueuer setting; the median counts (3)",
    )
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument(
        "--skip", default="", help="comma-separated: mediad,pgqueuer,procrastinate,latency"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile each mediad run")
    args = parser.parse_args(argv)
    skip = set(args.skip.split(","))

    report.quiet_logging()
    print(f"queue benchmark: {args.rows:,} rows per system; {report.machine()}")
    print(
        f"targets: mediad >= {TARGET_RATIO}x pgqueuer's rows/s with every lease and event "
        f"written; NOTIFY pickup median < {TARGET_LATENCY_MS:.0f} ms"
    )
    results: list[Throughput] = []
    latency: Latency | None = None
    with postgres.embedded() as server:
        pg_version = await server.setting("server_version")
        print(f"PostgreSQL {pg_version}, embedded, in {server.pgdata}")
        state_dir = server.pgdata.parent / "state"
        state_dir.mkdir()
        # Interleaved, so a slow spell of a shared machine does not land on one system only.
        for _ in range(args.repeat):
            if "mediad" not in skip:
                for concurrency in args.mediad_concurrency:
                    result = await bench_mediad(
                        server, state_dir, args.rows, concurrency, args.claim_batch, args.profile
                    )
                    results.append(print_result(result))
            if "pgqueuer" not in skip:
                for consumers in args.pgqueuer_consumers:
                    result = await bench_pgqueuer(server, args.rows, args.pgqueuer_batch, consumers)
                    results.append(print_result(result))
        if "procrastinate" not in skip:
            result = await bench_procrastinate(
                server, args.rows, args.procrastinate_concurrency, args.procrastinate_pool
            )
            results.append(print_result(result))
        if "latency" not in skip:
            print(f"  latency: {args.latency_samples} single-row INSERTs into an idle daemon ...")
            latency = await bench_latency(server, state_dir, args.latency_samples, warmup=5)

    return summarize(results, latency)


def print_result(result: Throughput) -> Throughput:
    status = "OK" if result.ok else "FAILED"
    print(
        f"  {result.system:<14} {result.setting:<34} {result.rate:>8,.0f} rows/s "
        f"({result.seconds:.2f} s)  check {status}: {result.check}",
        flush=True,
    )
    return result


def best(results: list[Throughput], system: str) -> Throughput | None:
    """The median run of the system's fastest setting (by its median): the rounds alternate the
    systems, so a slow spell of a shared machine weighs on both alike."""
    by_setting: dict[str, list[Throughput]] = {}
    for run in results:
        if run.system == system and run.ok:
            by_setting.setdefault(run.setting, []).append(run)
    medians = [
        sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2] for runs in by_setting.values()
    ]
    return max(medians, key=lambda r: r.rate) if medians else None


def summarize(results: list[Throughput], latency: Latency | None) -> int:
    """Every table, each judging its targets; the exit status (1 when any is missed)."""
    verdict = targets.Verdict()
    report.print_table(
        "Throughput: claim -> no-op -> complete, timed until every row is finished in the database",
        ["system", "setting", "rows", "seconds", "rows/s", "PG CPU us/row", "client CPU us/row",
         "WAL B/row", "check"],
        [[r.system, r.setting, r.rows, r.seconds, r.rate, r.pg_us_per_row, r.client_us_per_row,
          r.wal_per_row, "OK" if r.ok else "FAILED"] for r in results],
    )  # fmt: skip
    verdict.check(r.ok for r in results)

    mediad = best(results, "mediad")
    rows: list[list[Any]] = []
    for other in ("pgqueuer", "procrastinate"):
        them = best(results, other)
        if mediad is None or them is None:
            if other == "pgqueuer":
                verdict.not_measured("the ratio to pgqueuer")
            continue
        ratio = mediad.rate / them.rate
        target_cell = met = "-"
        if other == "pgqueuer":
            target = verdict.judge(targets.Target("rows/s mediad / pgqueuer", ratio, TARGET_RATIO))
            target_cell, met = target.goal_text, target.met_text
        rows.append(
            [
                f"mediad / {other}",
                f"{mediad.rate:,.0f} / {them.rate:,.0f}",
                f"{ratio:.2f}x",
                target_cell,
                met,
                f"{mediad.pg_us_per_row:,.0f} / {them.pg_us_per_row:,.0f}",
                f"{mediad.client_us_per_row:,.0f} / {them.client_us_per_row:,.0f}",
            ]
        )
    if rows:
        report.print_table(
            "Ratios, the median run of each one's fastest setting (mediad also writes a lease and"
            " JSONB events per row)",
            ["ratio", "rows/s", "value", "target", "met", "PG CPU us/row", "client CPU us/row"],
            rows,
        )
        print(
            "  (CPU per row varies far less than rows/s with the load of a shared machine. "
            "On 2 cores the database's CPU per row bounds the rate.)"
        )

    if latency is None:
        verdict.not_measured("the pickup latency")
    else:
        pickup = verdict.judge(
            targets.Target(
                "NOTIFY pickup median",
                report.median(latency.samples_ms),
                TARGET_LATENCY_MS,
                " ms",
                below=True,
            )
        )
        # A row never picked up fails the benchmark whatever the median.
        verdict.check([latency.missed == 0])
        met = "yes" if pickup.met and latency.missed == 0 else "NO"
        report.print_table(
            "Pickup latency: idle daemon, woken by NOTIFY only (poll_interval 5s)",
            ["measure", "samples", "median ms", "p90 ms", "p99 ms", "max ms", "target", "met"],
            [
                latency_row(
                    "INSERT commit -> process()",
                    latency.samples_ms,
                    f"median {pickup.goal_text}",
                    met,
                ),
                latency_row("INSERT sent -> process()", latency.from_send_ms, "-", "-"),
            ],
        )
        if latency.missed:
            print(f"  {latency.missed} row(s) not picked up within 10 s (NOTIFY missed)")
    return verdict.exit_status()


def latency_row(measure: str, samples_ms: list[float], target: str, met: str) -> list[Any]:
    return [
        measure,
        len(samples_ms),
        report.median(samples_ms),
        report.percentile(samples_ms, 90),
        report.percentile(samples_ms, 99),
        max(samples_ms, default=math.nan),
        target,
        met,
    ]


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""The analysis stage with the openai backend against a local server speaking OpenAI's wire
protocol that answers after a model-like latency: rows/s against the ideal
`concurrency / latency`, and mediad's CPU per request.

    .venv/bin/python benchmarks/analysis.py [--rows 500] [--concurrency 32] [--latency-ms 200]

`mediad run --once` runs as a child process with only the analysis stage due (the rows are
stored and marked downloaded beforehand, each with its own bytes, so nothing is answered from
the cache). Throughput runs from the first `ai_analysis_started` to the last
`ai_analysis_completed` the database recorded; CPU per request is the child's CPU (decoder
workers included) less that of the same run over no rows (start-up, migration, forkserver),
divided by the rows. Exits 1 when a check fails or a target is missed.
"""

# ruff: noqa: E402 (the imports must follow the sys.path repair below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder would come first on sys.path, and benchmarks/queue.py
# would then shadow the standard library's queue.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
sys.path.insert(0, str(_REPO))

import argparse
import asyncio
import tempfile
from typing import Any

from benchmarks.harness import measure, postgres, programs, report, targets
from mediad import db, migrate
from mediad.storage.local import Store
from tests import media
from tests.archive_support import downloaded_rows
from tests.vision_server import VisionServer

TARGET_OF_IDEAL = 0.8
TARGET_CPU_MS = 2.0

SPAN = """
SELECT min((e->>'timestamp')::timestamptz) FILTER (WHERE e->>'event' = 'ai_analysis_started'),
       max((e->>'timestamp')::timestamptz) FILTER (WHERE e->>'event' = 'ai_analysis_completed'),
       count(*) FILTER (WHERE e->>'event' = 'ai_analysis_completed'),
       count(DISTINCT media_id) FILTER (WHERE ai_analysis_status = 'completed')
FROM post_media, jsonb_array_elements(ai_analysis_log) AS e
"""


async def prepare(url: str, root: Path, rows: int) -> None:
    """A migrated database with `rows` downloaded photos waiting for analysis."""
    async with postgres.connection(url) as conn:
        await migrate.migrate(conn)
    pool = await db.create_pool(url, max_size=2)
    try:
        # Small photos: the decode and downscale cost little, so the figures are the pipeline's.
        photos = [media.jpeg(160, 120, seed=i) for i in range(rows)]
        await downloaded_rows(pool, Store(root, None), photos, analysis="not_started")
    finally:
        await pool.close()


def run_mediad(url: str, root: Path, state: Path, server: VisionServer, concurrency: int) -> Any:
    env = programs.clean_environment(
        {
            "MEDIAD_DATABASE_URL": url,
            "MEDIAD_STORAGE_ROOT": str(root),
            "MEDIAD_DAEMON_STATE_DIR": str(state),
            "MEDIAD_LOG_LEVEL": "warning",
            "MEDIAD_ANALYSIS_ENABLED": "true",
            "MEDIAD_ANALYSIS_BACKEND": "openai",
            "MEDIAD_ANALYSIS_ENDPOINT_URL": server.base_url,
            "MEDIAD_ANALYSIS_MODEL": "vision-bench",
            "MEDIAD_ANALYSIS_CONCURRENCY": str(concurrency),
            "MEDIAD_ANALYSIS_MAX_IMAGE_PX": "256",
            "MEDIAD_DAEMON_CLAIM_BATCH": str(concurrency),
        }
    )
    return measure.run_child(
        [*programs.mediad_command(), "run", "--once"], env=env, stdout=sys.stderr, timeout=600
    )


async def one_run(
    server_pg: postgres.Server, name: str, rows: int, concurrency: int, vision: VisionServer
) -> tuple[Any, tuple[Any, ...]]:
    url = await server_pg.create_database(name)
    with tempfile.TemporaryDirectory(prefix="mediad-analysis-bench-") as tmp:
        root, state = Path(tmp) / "media", Path(tmp) / "state"
        await prepare(url, root, rows)
        run = await asyncio.to_thread(run_mediad, url, root, state, vision, concurrency)
        async with postgres.connection(url) as conn:
            span = tuple(await conn.fetchrow(SPAN) or ())
    await server_pg.drop_database(name)
    return run, span


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    args = parser.parse_args()
    report.quiet_logging()
    print(report.machine())
    verdict = targets.Verdict()
    vision = VisionServer(latency=args.latency_ms / 1000)
    await vision.start()
    try:
        with postgres.embedded() as pg:
            baseline, _ = await one_run(pg, "analysis_empty", 0, args.concurrency, vision)
            run, (first, last, completed, rows_done) = await one_run(
                pg, "analysis_rows", args.rows, args.concurrency, vision
            )
    finally:
        await vision.stop()
    verdict.check([baseline.returncode == 0, run.returncode == 0, rows_done == args.rows])
    verdict.check([completed == args.rows, len(vision.seen) == args.rows])
    seconds = (last - first).total_seconds() if first and last else float("nan")
    rows_per_s = report.rate(args.rows, seconds)
    ideal = args.concurrency / (args.latency_ms / 1000)
    cpu_ms = (run.cpu_seconds - baseline.cpu_seconds) / args.rows * 1000
    report.print_table(
        f"analysis, openai backend: {args.rows} rows, concurrency {args.concurrency},"
        f" {args.latency_ms:g} ms per answer",
        ["measure", "value"],
        [
            ["rows/s (first start to last completion)", f"{rows_per_s:.1f}"],
            ["ideal rows/s (concurrency / latency)", f"{ideal:.1f}"],
            ["requests the server saw", len(vision.seen)],
            ["mediad CPU, run (s)", f"{run.cpu_seconds:.2f}"],
            ["mediad CPU, same run over no rows (s)", f"{baseline.cpu_seconds:.2f}"],
            ["mediad CPU per request (ms)", f"{cpu_ms:.2f}"],
            ["mediad peak RSS (MB)", f"{run.peak_rss / 1e6:.0f}"],
            ["wall time of the run, start-up included (s)", f"{run.seconds:.2f}"],
        ],
    )
    verdict.print_targets(
        "targets",
        [
            verdict.judge(targets.Target("rows/s of ideal", rows_per_s / ideal, TARGET_OF_IDEAL)),
            verdict.judge(
                targets.Target("CPU per request", cpu_ms, TARGET_CPU_MS, unit=" ms", below=True)
            ),
        ],
    )
    return verdict.exit_status()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""The analysis stage, both backends, in one run.

    .venv/bin/python benchmarks/analysis.py [--local-pictures 200] [--rows 500]
        [--concurrency 32] [--latency-ms 200]

local: pictures/s of the stage (`mediad run --once`, backend local, its decoder workers one per
core) on photo-like pictures with text, against the same OCR and hash calls from a plain script
with the same number of processes (benchmarks/analysis_local.py's bare side), on the same
pictures; target 0.9x; the daemon's peak memory (its whole process tree) printed.

openai: against a local server speaking OpenAI's wire protocol that answers after a model-like
latency: rows/s against the ideal `concurrency / latency`, and mediad's CPU per request.

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
import os
import tempfile
from typing import Any

from benchmarks import analysis_local
from benchmarks.harness import measure, postgres, programs, report, targets
from mediad import db, migrate
from mediad.storage.local import Store
from tests import media
from tests.archive_support import downloaded_rows
from tests.vision_server import VisionServer

TARGET_VS_BARE = 0.9
TARGET_OF_IDEAL = 0.8
TARGET_CPU_MS = 2.0

SPAN = """
SELECT min((e->>'timestamp')::timestamptz) FILTER (WHERE e->>'event' = 'ai_analysis_started'),
       max((e->>'timestamp')::timestamptz) FILTER (WHERE e->>'event' = 'ai_analysis_completed'),
       count(*) FILTER (WHERE e->>'event' = 'ai_analysis_completed'),
       count(DISTINCT media_id) FILTER (WHERE ai_analysis_status = 'completed')
FROM post_media, jsonb_array_elements(ai_analysis_log) AS e
"""


async def prepare(url: str, root: Path, files: list[bytes]) -> None:
    """A migrated database with one downloaded row per file, waiting for analysis."""
    async with postgres.connection(url) as conn:
        await migrate.migrate(conn)
    pool = await db.create_pool(url, max_size=2)
    try:
        await downloaded_rows(pool, Store(root, None), files, analysis="not_started")
    finally:
        await pool.close()


def run_mediad(url: str, root: Path, state: Path, settings: dict[str, str]) -> Any:
    env = programs.clean_environment(
        {
            "MEDIAD_DATABASE_URL": url,
            "MEDIAD_STORAGE_ROOT": str(root),
            "MEDIAD_DAEMON_STATE_DIR": str(state),
            "MEDIAD_LOG_LEVEL": "warning",
            "MEDIAD_ANALYSIS_ENABLED": "true",
            **settings,
        }
    )
    return measure.run_child(
        [*programs.mediad_command(), "run", "--once"],
        env=env, stdout=sys.stderr, timeout=1800, tree=True,
    )  # fmt: skip


def openai_settings(vision: VisionServer, concurrency: int) -> dict[str, str]:
    return {
        "MEDIAD_ANALYSIS_BACKEND": "openai",
        "MEDIAD_ANALYSIS_ENDPOINT_URL": vision.base_url,
        "MEDIAD_ANALYSIS_MODEL": "vision-bench",
        "MEDIAD_ANALYSIS_CONCURRENCY": str(concurrency),
        "MEDIAD_ANALYSIS_MAX_IMAGE_PX": "256",
        "MEDIAD_DAEMON_CLAIM_BATCH": str(concurrency),
    }


async def one_run(
    server_pg: postgres.Server, name: str, files: list[bytes], settings: dict[str, str]
) -> tuple[Any, tuple[Any, ...]]:
    url = await server_pg.create_database(name)
    with tempfile.TemporaryDirectory(prefix="mediad-analysis-bench-") as tmp:
        root, state = Path(tmp) / "media", Path(tmp) / "state"
        await prepare(url, root, files)
        run = await asyncio.to_thread(run_mediad, url, root, state, settings)
        async with postgres.connection(url) as conn:
            span = tuple(await conn.fetchrow(SPAN) or ())
    await server_pg.drop_database(name)
    return run, span


async def local_table(pg: postgres.Server, count: int, verdict: targets.Verdict) -> None:
    """The local backend's stage against the bare script, on the same pictures."""
    workers = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="mediad-analysis-pictures-") as tmp:
        made = analysis_local.make_pictures(Path(tmp), count, workers)
        paths = [path for path, _ in made]
        bare = await asyncio.to_thread(analysis_local.bare_side, paths, workers)
        files = [path.read_bytes() for path in paths]
    settings = {
        "MEDIAD_ANALYSIS_BACKEND": "local",
        # One OCR worker per core, as the bare script has one process per core.
        "MEDIAD_ANALYSIS_CONCURRENCY": str(workers),
    }
    baseline, _ = await one_run(pg, "local_empty", [], settings)
    run, (first, last, completed, rows_done) = await one_run(pg, "local_rows", files, settings)
    verdict.check([run.returncode == 0, rows_done == count, completed == count])
    seconds = (last - first).total_seconds() if first and last else float("nan")
    stage_rate = report.rate(count, seconds)
    bare_rate = report.rate(count, bare.seconds)
    report.print_table(
        f"analysis, local backend: {count} photo-like pictures with text, {workers} processes",
        ["side", "pictures/s", "CPU s/picture", "peak memory MB"],
        [
            ["bare script (rapidocr + hashes)", f"{bare_rate:.2f}",
             f"{bare.cpu_seconds / count:.2f}", f"{bare.peak_rss / 1e6:.0f} (largest worker)"],
            ["mediad stage (run --once)", f"{stage_rate:.2f}",
             f"{(run.cpu_seconds - baseline.cpu_seconds) / count:.2f}",
             f"{run.tree_peak_rss / 1e6:.0f} RSS, {run.tree_peak_pss / 1e6:.0f} PSS (all)"],
        ],
    )  # fmt: skip
    verdict.judge(
        targets.Target("local: stage / bare script", stage_rate / bare_rate, TARGET_VS_BARE)
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-pictures", type=int, default=200, help="0 skips the local table")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    args = parser.parse_args()
    report.quiet_logging()
    print(report.machine())
    verdict = targets.Verdict()
    vision = VisionServer(latency=args.latency_ms / 1000)
    await vision.start()
    # Small photos: their decode and downscale cost little, so the figures are the pipeline's.
    photos = [media.jpeg(160, 120, seed=i) for i in range(args.rows)]
    settings = openai_settings(vision, args.concurrency)
    try:
        with postgres.embedded() as pg:
            if args.local_pictures:
                await local_table(pg, args.local_pictures, verdict)
            baseline, _ = await one_run(pg, "analysis_empty", [], settings)
            run, (first, last, completed, rows_done) = await one_run(
                pg, "analysis_rows", photos, settings
            )
    finally:
        await vision.stop()
    verdict.check([baseline.returncode == 0, run.returncode == 0, rows_done == args.rows])
    verdict.check([completed == args.rows, len(vision.seen) == args.rows])
    seconds = (last - first).total_seconds() if first and last else float("nan")
    rows_per_s = report.rate(args.rows, seconds)
    ideal = args.concurrency / (args.latency_ms / 1000)
    # The daemon's own CPU (the request's path: claim, HTTP, JSON, database) and its decoder
    # workers' (decoding and downscaling each picture), each less the same run over no rows.
    own = run.cpu_seconds - run.orphans_cpu_seconds
    own_baseline = baseline.cpu_seconds - baseline.orphans_cpu_seconds
    cpu_ms = (own - own_baseline) / args.rows * 1000
    decode_ms = (run.orphans_cpu_seconds - baseline.orphans_cpu_seconds) / args.rows * 1000
    report.print_table(
        f"analysis, openai backend: {args.rows} rows, concurrency {args.concurrency},"
        f" {args.latency_ms:g} ms per answer",
        ["measure", "value"],
        [
            ["rows/s (first start to last completion)", f"{rows_per_s:.1f}"],
            ["ideal rows/s (concurrency / latency)", f"{ideal:.1f}"],
            ["requests the server saw", len(vision.seen)],
            ["mediad CPU, run, all processes (s)", f"{run.cpu_seconds:.2f}"],
            ["mediad CPU, same run over no rows (s)", f"{baseline.cpu_seconds:.2f}"],
            ["daemon CPU per request (ms)", f"{cpu_ms:.2f}"],
            ["decoder workers' CPU per picture (ms)", f"{decode_ms:.2f}"],
            ["mediad peak RSS, all processes (MB)", f"{run.tree_peak_rss / 1e6:.0f}"],
            ["wall time of the run, start-up included (s)", f"{run.seconds:.2f}"],
        ],
    )
    verdict.print_targets(
        "targets",
        [
            verdict.judge(targets.Target("rows/s of ideal", rows_per_s / ideal, TARGET_OF_IDEAL)),
            verdict.judge(
                targets.Target(
                    "daemon CPU per request", cpu_ms, TARGET_CPU_MS, unit=" ms", below=True
                )
            ),
        ],
    )
    return verdict.exit_status()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Where the queue's PostgreSQL CPU goes: the claim and the completion, each on its own, with
parts of the schema taken away.

    .venv/bin/python benchmarks/queue_statements.py [--rows 10000] [--batch 100] [--rounds 2]

`benchmarks/queue.py` measures the whole daemon against pgqueuer; this script explains its
"PG CPU us/row" column. One embedded PostgreSQL; each variant gets a fresh database with
`--rows` new rows, drained by mediad's own `StageQueue` (claim `--batch`, then complete them
with an empty result, as the no-op stage does) on one pooled connection, one statement at a
time. The backend's CPU time (`/proc/<pid>/schedstat`, in nanoseconds) is read around each
statement and summed by kind. The variants alternate over `--rounds`; medians are printed.

- `as shipped`: the schema and statements mediad runs.
- `no counts trigger`: the statement trigger that keeps `mediad_row_counts` disabled.
- `no other indexes`: only the primary key and the stages' queue indexes left.
- `minimal completion`: the completion reduced to the status, the lease and its one event
  (no result columns, no error bookkeeping, no opened-stage skips).
- `generic plans`: `plan_cache_mode = force_generic_plan`, planning paid once per statement.

What it found (2026-12-02): none of the variants takes more than about 10% off the 120 us per
row of the shipped statements; what is left is the two updates of a wide row themselves.
(2026-12-03) With `--batch 500` the completion cost more per row than at 100 (95.6 against
76.5 us): the fence, three conditions on the row, made the planner expect one leased row and
read the batch once per row of the table. Said as one comparison with the batch
(sql/queries.sql, "Fences"), it costs 63.6. Reports only; it judges no target.
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
import tempfile
from collections.abc import Sequence

from benchmarks import queue as queue_benchmark
from benchmarks.harness import postgres, report
from mediad import db, stages
from mediad import queue as stage_queue
from mediad.stage import Result, Stage

DATABASE = "bench_statements"
# The stages a download completion would open, all disabled, as in benchmarks/queue.py.
DISABLED = frozenset({"archive", "ai_analysis", "derive"})
OTHER_INDEXES = ("post_media_post_id", "post_media_sha256_sum", "post_media_created_at",
                 "post_media_error_code")  # fmt: skip

MINIMAL_COMPLETION = """
UPDATE post_media AS p
SET download_status = 'completed', updated_at = now(), download_lease_owner = NULL,
    download_lease_expires_at = NULL, download_next_attempt_at = NULL, downloaded_at = now(),
    archive_status = 'skipped', derive_status = 'skipped',
    ai_analysis_log = p.ai_analysis_log || mediad_event('media_downloaded', 'success', h.details)
FROM unnest($1::text[], $2::integer[], $3::jsonb[], $4::jsonb[], $5::jsonb[])
    AS h(media_id, attempt, result, details, metadata)
WHERE p.media_id = h.media_id AND p.download_status = 'started'
  AND p.download_lease_owner = $6 AND p.download_attempts = h.attempt
RETURNING p.media_id
"""

VARIANTS = ("as shipped", "no counts trigger", "no other indexes", "minimal completion",
            "generic plans")  # fmt: skip


def backend_cpu_ns(pid: int) -> int:
    """CPU time the process has run, in nanoseconds (the scheduler's own account)."""
    with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
        return int(f.read().split()[0])


async def prepare(server: postgres.Server, variant: str, rows: int) -> str:
    url = await server.create_mediad_database(DATABASE)
    async with postgres.connection(url) as conn:
        await conn.execute(queue_benchmark.INSERT_ROWS, rows)
        if variant == "no counts trigger":
            await conn.execute("ALTER TABLE post_media DISABLE TRIGGER mediad_after_update")
        elif variant == "no other indexes":
            for index in OTHER_INDEXES:
                await conn.execute(f"DROP INDEX {index}")
        elif variant == "generic plans":
            await conn.execute(
                f"ALTER DATABASE {DATABASE} SET plan_cache_mode = force_generic_plan"
            )
    await postgres.vacuum_analyze(url)
    return url


async def drain(url: str, variant: str, batch: int, state_dir: Path) -> tuple[float, float]:
    """Claim and complete every row; the backend's CPU per row (us) for claims, completions."""
    cfg = queue_benchmark.mediad_config(url, state_dir, batch, batch)
    stage = Stage.configured(stages.DOWNLOAD, queue_benchmark.noop, cfg)
    pool = await db.create_pool(url, min_size=1, max_size=1)
    try:
        pid: int = await pool.fetchval("SELECT pg_backend_pid()")
        queue = stage_queue.StageQueue(pool, stage, "bench-owner", 60.0, disabled=DISABLED)
        if variant == "minimal completion":
            # The one statement swapped, in this measurement only: the queue has no other door.
            queue._statements[stage_queue.Completed] = MINIMAL_COMPLETION
        claim_ns = complete_ns = done = 0
        while True:
            before = backend_cpu_ns(pid)
            rows = await queue.claim(batch)
            claimed = backend_cpu_ns(pid)
            claim_ns += claimed - before
            if not rows:
                break
            await queue.finish([stage_queue.Completed(row, Result()) for row in rows])
            complete_ns += backend_cpu_ns(pid) - claimed
            done += len(rows)
    finally:
        await pool.close()
    return claim_ns / done / 1e3, complete_ns / done / 1e3


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="rows per claim (100)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    report.quiet_logging()
    print(f"queue statements: {args.rows:,} rows, {args.batch} per statement; {report.machine()}")
    figures: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    with postgres.embedded() as server, tempfile.TemporaryDirectory() as state:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                url = await prepare(server, variant, args.rows)
                figures[variant].append(await drain(url, variant, args.batch, Path(state)))
                await server.drop_database(DATABASE)
    table = []
    for variant, runs in figures.items():
        claim = report.median([c for c, _ in runs])
        complete = report.median([c for _, c in runs])
        table.append([variant, claim, complete, claim + complete])
    report.print_table(
        "PostgreSQL backend CPU per row, medians of the rounds",
        ["variant", "claim us/row", "completion us/row", "both us/row"],
        table,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

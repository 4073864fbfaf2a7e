"""Derive benchmark: thumbnails and previews per second of the derive stage against a plain
Pillow script and a plain pyvips script, and the daemon's peak memory with large PNGs in the mix.

    .venv/bin/python benchmarks/derive.py [--photos 1000] [--pngs 20] [--png-side 13000]
        [--rounds 1]

The corpus (harness/corpus.py `photos_and_pngs`, kept in --cache-dir between runs): 12 MP JPEGs
like phone photos (4000x3000, quality 90, camera EXIF with GPS; a few distinct pictures, each
photo one of them with its own COM segment, so every photo has distinct bytes) and large PNGs
(--png-side square, RGB, 146 MB each at 13000; one picture, each PNG with its own tEXt chunk),
the PNGs spread among the photos.

Each run makes a 320 px thumbnail and a 1280 px preview (WebP, quality 80) of every file, two
decodes at a time:
- mediad: `mediad run --once` on rows that look downloaded (the files linked into a fresh
  store), the derive stage alone, `media.workers` 2, `derive.optimized` and `public_copy` off
  (the scripts make neither);
- mediad, all kinds: the same with the optimized JPEG and the public copy too (for the record;
  no target);
- pillow: a pool of 2 processes; per file and size, open, draft, exif_transpose, thumbnail,
  WebP save;
- pyvips: a pool of 2 processes, one libvips thread each; per file and size,
  `pyvips.Image.thumbnail(path, size)` and `webpsave`.

mediad takes the files in the scripts' order (claims go by created_at). Rates are over each
run's busy time: mediad's from its first derive_started to its last derivatives_created event,
a script's from its pool's first task to its last (start-up, a constant, is in the wall time).
mediad runs `derive.concurrency` 4 rows in flight for its 2 workers (--concurrency): a row's
files are hashed, fsynced and recorded while the worker decodes the next one, where the
scripts have nothing to wait for. CPU per file counts the tool's processes (and PostgreSQL's
for mediad), which a busy shared machine moves much less than rates. Peak memory is the
harness's process tree (measure.run_child(tree=True); mediad: the daemon, its forkserver,
resource tracker and decoder workers): the largest sum of the members' RSS, where pages they
share (the forkserver's imports in every forked worker) count once per process, and the
largest sum of their PSS (shared pages split between their sharers), sampled less often.

Rounds alternate the tools (--rounds); the figures judged are each tool's median rate over
its rounds, and the largest peak of any round.

Targets: mediad's files per second at least 1.0x the faster script's, and its peak memory
under 500 MB. Exit status 1 when one is missed.
"""

# ruff: noqa: E402 (the imports must follow the sys.path repair below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory would come first on sys.path, and benchmarks/queue.py
# would then shadow the standard library's queue module.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
sys.path.insert(0, str(_REPO))

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from datetime import datetime

from benchmarks.harness import corpus, measure, postgres, programs, report, scratch, targets
from benchmarks.harness.corpus import CorpusFile
from benchmarks.harness.runs import Run
from mediad.storage.local import Store

MB = report.MB
PARALLELISM = 2
TARGET_RATIO = 1.0
TARGET_RSS = 500 * MB

PILLOW_SCRIPT = """
import json, multiprocessing, sys, time
from PIL import Image, ImageOps
Image.MAX_IMAGE_PIXELS = None

def derive(job):
    path, out = job
    for size in (1280, 320):
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            img = ImageOps.exif_transpose(img)
            img.thumbnail((size, size))
            img.save(f"{out}-{size}.webp", quality=80)

if __name__ == "__main__":
    jobs = json.load(open(sys.argv[1]))
    with multiprocessing.Pool(int(sys.argv[2])) as pool:
        started = time.perf_counter()
        pool.map(derive, jobs, chunksize=1)
        print(json.dumps({"busy": time.perf_counter() - started}))
"""

PYVIPS_SCRIPT = """
import json, multiprocessing, sys, time
import pyvips

def derive(job):
    path, out = job
    for size in (1280, 320):
        pyvips.Image.thumbnail(path, size).webpsave(f"{out}-{size}.webp", Q=80)

if __name__ == "__main__":
    jobs = json.load(open(sys.argv[1]))
    with multiprocessing.Pool(int(sys.argv[2])) as pool:
        started = time.perf_counter()
        pool.map(derive, jobs, chunksize=1)
        print(json.dumps({"busy": time.perf_counter() - started}))
"""

SCRIPTS = {"pillow": PILLOW_SCRIPT, "pyvips": PYVIPS_SCRIPT}


# --- one run ---------------------------------------------------------------------------------


def measured(
    account: measure.CpuAccount, args: Sequence[str], env: dict[str, str], work: Path
) -> tuple[measure.ChildRun, measure.CpuSplit, str]:
    """Run `args` to its end in `work` with its whole process tree measured (the harness's
    ProcessTree: summed RSS and PSS), the machine's CPU split around it; and its stdout."""
    with (
        (work / "stdout").open("wb") as out,
        (work / "stderr.log").open("wb") as err,
        account.measure() as split,
    ):
        child = measure.run_child(args, env=env, cwd=work, stdout=out, stderr=err, tree=True)
    return child, split, (work / "stdout").read_text(errors="replace")


def recorded(
    tool: str, files: Sequence[CorpusFile], child: measure.ChildRun, split: measure.CpuSplit
) -> Run:
    return Run(
        tool,
        len(files),
        sum(f.size for f in files),
        child.seconds,
        ok=False,
        check="",
        peak_rss=child.tree_peak_rss,
        own_peak_rss=child.peak_rss,
        peak_pss=child.tree_peak_pss,
        cpu_seconds=child.cpu_seconds,
        descendants_cpu_seconds=child.orphans_cpu_seconds,
        split=split,
    )


def run_script(
    account: measure.CpuAccount,
    name: str,
    source: str,
    cache: Path,
    files: Sequence[CorpusFile],
    work: Path,
) -> Run:
    work.mkdir()
    script = work / f"bare_{name}.py"  # not pyvips.py: it would shadow the module
    script.write_text(source)
    (work / "out").mkdir()
    jobs = [[str(cache / f.name), str(work / "out" / f"{i:05d}")] for i, f in enumerate(files)]
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = programs.clean_environment({"VIPS_CONCURRENCY": "1"})
    args = [sys.executable, str(script), str(work / "jobs.json"), str(PARALLELISM)]
    child, split, out = measured(account, args, env, work)
    run = recorded(name, files, child, split)
    made = sum(1 for _ in (work / "out").iterdir())
    run.ok = child.returncode == 0 and made == 2 * len(files)
    run.check = f"exit {child.returncode}, {made} of {2 * len(files)} files"
    if child.returncode != 0:
        lines = (work / "stderr.log").read_text(errors="replace").strip().splitlines()
        run.check += f": {lines[-1][:300]}" if lines else ""
    else:
        run.busy_seconds = json.loads(out.strip().splitlines()[-1])["busy"]
    return run


INSERT_ROWS = """
INSERT INTO post_media (post_id, media_url, media_type, download_status, local_file_path,
    md5_sum, sha256_sum, file_size, mime_type, width, height, archive_status,
    ai_analysis_status, downloaded_at, created_at)
SELECT 'bench', 'https://cdn.example/' || f.name, 'image', 'completed', f.path, f.md5, f.sha256,
    f.size, f.mime, f.width, f.height, 'skipped', 'skipped', now(),
    now() + make_interval(secs => f.n / 1000.0)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
    $7::int[], $8::int[]) WITH ORDINALITY AS f(name, path, md5, sha256, size, mime, width,
    height, n)
"""

RESULTS = """
SELECT count(*) FILTER (WHERE derive_status = 'completed'
        AND derivatives ? 'thumbnail' AND derivatives ? 'preview') AS done,
    count(*) AS total,
    string_agg(DISTINCT error_code, ', ') AS errors,
    (SELECT min((e ->> 'timestamp')::timestamptz)
        FROM post_media, jsonb_array_elements(ai_analysis_log) e
        WHERE e ->> 'event' = 'derive_started') AS first,
    (SELECT max((e ->> 'timestamp')::timestamptz)
        FROM post_media, jsonb_array_elements(ai_analysis_log) e
        WHERE e ->> 'event' = 'derivatives_created') AS last
FROM post_media
"""


async def prepare(
    server: postgres.Server, name: str, store: Store, cache: Path, files: Sequence[CorpusFile]
) -> str:
    """A fresh database whose rows look downloaded, their files linked into `store`, claimed
    in the corpus order (the order the scripts take them in)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    url = await server.create_mediad_database(name)
    columns: list[list[object]] = [[] for _ in range(8)]
    for f in files:
        source = cache / f.name
        ext = source.suffix[1:]
        target = store.path_for("images", f.sha256, ext)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(source, target)
        with Image.open(source) as img:
            width, height = img.size
        values = [source.name, str(target), f.md5, f.sha256, f.size,
                  "image/jpeg" if ext == "jpg" else "image/png", width, height]  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    async with postgres.connection(url) as conn:
        await conn.execute(INSERT_ROWS, *columns)
    await postgres.vacuum_analyze(url, "post_media")
    return url


def run_mediad(
    account: measure.CpuAccount,
    server: postgres.Server,
    tool: str,
    cache: Path,
    files: Sequence[CorpusFile],
    work: Path,
    *,
    every_kind: bool,
    concurrency: int,
) -> Run:
    work.mkdir()
    name = "derive_" + tool.replace(" ", "_").replace(",", "")
    store = Store(work / "media", None)
    db_url = asyncio.run(prepare(server, name, store, cache, files))
    env = programs.clean_environment(
        {
            "MEDIAD_DATABASE_URL": db_url,
            "MEDIAD_STORAGE_ROOT": str(work / "media"),
            "MEDIAD_DAEMON_STATE_DIR": str(work / "state"),
            "MEDIAD_MEDIA_WORKERS": str(PARALLELISM),
            "MEDIAD_MEDIA_DECODE_TIMEOUT": "10m",
            "MEDIAD_DERIVE_CONCURRENCY": str(concurrency),
            "MEDIAD_DERIVE_OPTIMIZED": "true" if every_kind else "false",
            "MEDIAD_DERIVE_PUBLIC_COPY": "true" if every_kind else "false",
            "MEDIAD_LOG_LEVEL": "warning",
        }
    )
    os.sync()
    try:
        child, split, _ = measured(
            account, [*programs.mediad_command(), "run", "--once"], env, work
        )
        result = asyncio.run(_results(db_url))
    finally:
        asyncio.run(server.drop_database(name))
    run = recorded(tool, files, child, split)
    first, last = result["first"], result["last"]
    if isinstance(first, datetime) and isinstance(last, datetime):
        run.busy_seconds = (last - first).total_seconds()
    run.ok = child.returncode == 0 and result["done"] == result["total"] == len(files)
    run.check = f"exit {child.returncode}, {result['done']} of {len(files)} rows derived"
    if result["errors"]:
        run.check += f" (errors: {result['errors']})"
    return run


async def _results(url: str) -> dict[str, object]:
    async with postgres.connection(url) as conn:
        record = await conn.fetchrow(RESULTS)
    assert record is not None
    return dict(record)


# --- the benchmark ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    report.quiet_logging()
    print(f"derive benchmark; {report.machine()}; load average {os.getloadavg()[0]:.2f}")
    cache = args.cache_dir
    scratch.warn_if_recent_cleanup(cache)
    files = corpus.photos_and_pngs(cache, args.photos, args.pngs, args.png_side)
    photo_bytes = sum(f.size for f in files if f.name.endswith(".jpg"))
    png_bytes = sum(f.size for f in files if f.name.endswith(".png"))
    width, height = corpus.FULL_SIZE
    print(
        f"corpus: {args.photos:,} photos {width}x{height} ({photo_bytes / MB:,.0f} MB),"
        f" {args.pngs} PNGs {args.png_side}x{args.png_side} ({png_bytes / MB:,.0f} MB)"
    )
    corpus.warm_page_cache(cache, files)
    runs: list[Run] = []
    with (
        postgres.embedded() as server,
        tempfile.TemporaryDirectory(prefix="mediad-bench-derive-", dir=args.scratch_dir) as tmp,
    ):
        account = measure.CpuAccount({}, {"postgres": server.pid})
        work = Path(tmp)
        for round_ in range(args.rounds):
            for tool in args.tools:
                where = work / f"{round_}-{tool.replace(' ', '-').replace(',', '')}"
                if tool in SCRIPTS:
                    run = run_script(account, tool, SCRIPTS[tool], cache, files, where)
                else:
                    run = run_mediad(account, server, tool, cache, files, where,
                                     every_kind=tool == "mediad, all kinds",
                                     concurrency=args.concurrency)  # fmt: skip
                runs.append(run)
                print(f"  round {round_ + 1}, {run.tool}: {run.busy_files_per_s:.2f} files/s,"
                      f" peak RSS {run.peak_rss / MB:.0f} MB ({run.check})",
                      flush=True)  # fmt: skip
                shutil.rmtree(where, ignore_errors=True)
    scratch.stamp_cleanup(cache)

    report.print_table(
        f"thumbnail 320 + preview 1280 (WebP) per file, {PARALLELISM} decodes at a time;"
        f" every run; {report.machine()}",
        ["tool", "files", "files/s", "busy s", "wall s", "peak RSS MB", "peak PSS MB",
         "own RSS MB", "CPU/file ms", "other CPUs", "check"],
        [[r.tool, r.files, r.busy_files_per_s, r.busy_seconds, r.seconds, r.peak_rss / MB,
          r.peak_pss / MB, r.own_peak_rss / MB, cpu_per_file_ms(r), r.others, r.check]
         for r in runs],
    )  # fmt: skip
    tools = list(dict.fromkeys(r.tool for r in runs))
    rate = {
        t: report.median([r.busy_files_per_s for r in runs if r.tool == t and r.ok]) for t in tools
    }
    report.print_table(
        f"medians over {args.rounds} alternating round(s); peaks are the largest of any round",
        ["tool", "files/s", "derivatives/s", "CPU/file ms", "peak RSS MB", "peak PSS MB"],
        [[t, rate[t], 2 * rate[t],
          report.median([cpu_per_file_ms(r) for r in runs if r.tool == t]),
          max(r.peak_rss for r in runs if r.tool == t) / MB,
          max(r.peak_pss for r in runs if r.tool == t) / MB] for t in tools],
    )  # fmt: skip

    verdict = targets.Verdict()
    verdict.check(r.ok for r in runs)
    scripts = [t for t in SCRIPTS if t in rate and not math.isnan(rate[t])]
    judged = []
    if "mediad" in rate and scripts:
        faster = max(scripts, key=lambda t: rate[t])
        judged.append(verdict.judge(targets.Target(
            f"mediad / {faster} (the faster script), files/s",
            report.ratio(rate["mediad"], rate[faster]), TARGET_RATIO,
        )))  # fmt: skip
    else:
        verdict.not_measured("mediad against the scripts")
    daemon = [r for r in runs if r.tool.startswith("mediad")]
    if daemon:
        judged.append(verdict.judge(targets.Target(
            "mediad peak RSS, summed over its process tree (shared pages in each)",
            max(r.peak_rss for r in daemon) / MB, TARGET_RSS / MB, unit=" MB", below=True,
        )))  # fmt: skip
        pss = max(r.peak_pss for r in daemon) / MB
        print(f"(mediad's peak PSS, each shared page counted once: {pss:.0f} MB)")
    verdict.print_targets("targets", judged)
    return verdict.exit_status()


def cpu_per_file_ms(run: Run) -> float:
    """The tool's own CPU per file, its descendants' and (for mediad) PostgreSQL's included:
    steadier than rates on a shared machine."""
    return report.rate(
        1000 * (run.cpu_seconds + run.split.services.get("postgres", 0.0)), run.files
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=1000, help="12 MP JPEGs (1000)")
    parser.add_argument("--pngs", type=int, default=20, help="large PNGs among them (20)")
    parser.add_argument("--png-side", type=int, default=13000, help="the PNGs' side (13000)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tool, alternating")
    parser.add_argument(
        "--concurrency", type=int, default=4,
        help="derive.concurrency: rows in flight, for the 2 decoder workers (4)",
    )  # fmt: skip
    parser.add_argument(
        "--tools",
        type=lambda text: [t.strip() for t in text.split(";") if t.strip()],
        default=["pillow", "pyvips", "mediad", "mediad, all kinds"],
        help='";"-separated, in order: pillow; pyvips; mediad; mediad, all kinds',
    )
    scratch.add_cache_dir(parser)
    parser.add_argument(
        "--scratch-dir", type=Path, default=None,
        help="where runs write (default: the system's temp dir; same filesystem as the cache"
        " dir, so files are linked, not copied)",
    )  # fmt: skip
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

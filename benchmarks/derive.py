"""Derive benchmark: thumbnails and previews per second of the derive stage against a plain
Pillow script and a plain pyvips script, and the daemon's peak memory with large PNGs in the mix.

    .venv/bin/python benchmarks/derive.py [--photos 1000] [--pngs 20] [--png-side 13000]

The corpus (kept in --cache-dir between runs): 12 MP JPEGs like phone photos (4000x3000,
quality 90, camera EXIF with GPS; a few distinct pictures, each photo one of them with its own
COM segment, so every photo has distinct bytes) and large PNGs (--png-side square, RGB; one
picture, each PNG with its own tEXt chunk), the PNGs spread among the photos.

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
largest sum of RSS over the run's process tree (mediad: the daemon, its forkserver, resource
tracker and decoder workers; pages they share are counted in each), sampled every 20 ms; PSS
(shared pages counted once) is printed beside it.

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
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psutil

from benchmarks.harness import measure, postgres, programs, report, scratch, targets
from benchmarks.harness.corpus import CorpusFile, with_comment
from mediad.storage.local import Store

MB = report.MB
CORPUS_VERSION = "v1"
BASE_PHOTOS = 8
PARALLELISM = 2
TARGET_RATIO = 1.0
TARGET_RSS = 500 * MB
SIZES = (1280, 320)

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


# --- the corpus -------------------------------------------------------------------------------


def make_photo(seed: int) -> bytes:
    """A 12 MP camera-like JPEG: smooth colour fields, some finer detail and sensor grain."""
    from PIL import Image, ImageChops

    from tests import media

    width, height = 4000, 3000
    base = media.noise_image(width // 80, height // 80, seed=seed)
    detail = media.noise_image(width // 16, height // 16, seed=seed + 1000)
    picture = Image.blend(
        base.resize((width, height), Image.Resampling.BICUBIC),
        detail.resize((width, height), Image.Resampling.BICUBIC),
        0.15,
    )
    rng = random.Random(seed)
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    grain = grain.point(lambda v: 120 + v * 16 // 255)
    picture = ImageChops.add(picture, Image.merge("RGB", (grain, grain, grain)), 1, -128)
    exif = media.camera_exif(gps=(rng.uniform(0, 80), rng.uniform(0, 170)))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def make_png(side: int) -> bytes:
    """A large RGB PNG of smooth colour fields (zlib level 1, as a screenshot tool writes)."""
    from PIL import Image

    from tests import media

    small = media.noise_image(max(2, side // 64), max(2, side // 64), seed=77)
    out = io.BytesIO()
    small.resize((side, side), Image.Resampling.BILINEAR).save(out, "PNG", compress_level=1)
    return out.getvalue()


def with_text_chunk(png: bytes, text: bytes) -> bytes:
    """`png` with a tEXt chunk after its IHDR: other bytes, the same picture."""
    end_of_ihdr = 8 + 12 + int.from_bytes(png[8:12], "big")
    body = b"Comment\x00" + text
    chunk = len(body).to_bytes(4, "big") + b"tEXt" + body
    chunk += zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def corpus(cache: Path, photos: int, pngs: int, side: int) -> list[CorpusFile]:
    """The photos and PNGs under `cache`, generated once and reused while the cache lives; the
    PNGs spread evenly among the photos."""
    folder = f"derive-{CORPUS_VERSION}-p{photos}-n{pngs}-s{side}"
    directory = cache / folder
    manifest = directory / "manifest.json"
    if manifest.exists():
        return [CorpusFile(**entry) for entry in json.loads(manifest.read_text())]
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    bases = min(BASE_PHOTOS, photos)
    print(f"generating {photos:,} photos from {bases} pictures and {pngs} PNGs ...", flush=True)
    with concurrent.futures.ProcessPoolExecutor(max_workers=PARALLELISM) as pool:
        base_photos = list(pool.map(make_photo, range(bases)))
        base_png = pool.submit(make_png, side).result() if pngs else b""
    made: list[tuple[str, bytes]] = [
        (f"{i:05d}.jpg", with_comment(base_photos[i % bases], f"photo {i}".encode()))
        for i in range(photos)
    ]
    every = max(1, len(made) // max(pngs, 1))
    for index in range(pngs):
        name = f"big-{index:03d}.png"
        made.insert(
            min(len(made), index * (every + 1)), (name, with_text_chunk(base_png, name.encode()))
        )
    files = []
    for name, data in made:
        (directory / name).write_bytes(data)
        files.append(
            CorpusFile(
                f"{folder}/{name}",
                len(data),
                hashlib.md5(data, usedforsecurity=False).hexdigest(),
                hashlib.sha256(data).hexdigest(),
            )
        )
    manifest.write_text(json.dumps([vars(f) for f in files]))
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return files


# --- measuring a run --------------------------------------------------------------------------


@dataclass
class Run:
    tool: str
    files: int
    wall: float
    busy: float
    peak_rss: int
    peak_pss: int  # the same tree's proportional set size: shared pages counted once
    cpu: float  # the machine's busy CPU seconds during the run
    parent_cpu: float
    children_cpu: float
    ok: bool
    check: str
    database_cpu: float = 0.0  # PostgreSQL's, for mediad

    @property
    def files_per_s(self) -> float:
        return report.rate(self.files, self.busy)

    @property
    def cpu_per_file_ms(self) -> float:
        """The tool's own CPU per file (its processes, and PostgreSQL for mediad): steadier than
        rates on a shared machine."""
        total = self.parent_cpu + self.children_cpu + self.database_cpu
        return 1000 * total / self.files if self.files else float("nan")


@dataclass
class Child:
    returncode: int
    wall: float
    peak_rss: int  # the largest sum of RSS over the process tree
    peak_pss: int
    cpu: float  # the machine's busy CPU seconds
    out: str
    # CPU seconds of the process itself and of its children (as last sampled).
    parent_cpu: float = 0.0
    children_cpu: float = 0.0


def run_tree(args: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path) -> Child:
    """Run `args` to its end, sampling its process tree's memory."""
    busy0 = psutil.cpu_times()
    started = time.perf_counter()
    with log.open("wb") as err:
        proc = subprocess.Popen(list(args), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err)
        peak = [0, 0]
        done = threading.Event()

        cpu_of: dict[int, float] = {}  # pid -> CPU seconds when last seen

        def sample() -> None:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                rss = pss = 0
                with contextlib.suppress(psutil.Error):
                    for member in [root, *root.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            memory = member.memory_full_info()
                            rss += memory.rss
                            pss += memory.pss
                            times = member.cpu_times()
                            cpu_of[member.pid] = times.user + times.system
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            out, _ = proc.communicate()
        finally:
            done.set()
            sampler.join()
    wall = time.perf_counter() - started
    busy1 = psutil.cpu_times()
    cpu = (sum(busy1) - busy1.idle - getattr(busy1, "iowait", 0.0)) - (
        sum(busy0) - busy0.idle - getattr(busy0, "iowait", 0.0)
    )
    parent = cpu_of.pop(proc.pid, 0.0)
    children = sum(cpu_of.values())
    return Child(proc.returncode, wall, peak[0], peak[1], cpu, out.decode(errors="replace"),
                 parent, children)  # fmt: skip


def run_script(name: str, source: str, files: Sequence[Path], work: Path) -> Run:
    work.mkdir()
    script = work / f"bare_{name}.py"  # not pyvips.py: it would shadow the module
    script.write_text(source)
    (work / "out").mkdir()
    jobs = [[str(path), str(work / "out" / f"{i:05d}")] for i, path in enumerate(files)]
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = programs.clean_environment({"VIPS_CONCURRENCY": "1"})
    child = run_tree(
        [sys.executable, str(script), str(work / "jobs.json"), str(PARALLELISM)],
        env=env, cwd=work, log=work / "stderr.log",
    )  # fmt: skip
    made = sum(1 for _ in (work / "out").iterdir())
    ok = child.returncode == 0 and made == 2 * len(files)
    check = f"exit {child.returncode}, {made} of {2 * len(files)} files"
    busy = float("nan")
    if child.returncode != 0:
        lines = (work / "stderr.log").read_text(errors="replace").strip().splitlines()
        check += f": {lines[-1][:300]}" if lines else ""
    else:
        busy = json.loads(child.out.strip().splitlines()[-1])["busy"]
    return Run(name, len(files), child.wall, busy, child.peak_rss, child.peak_pss, child.cpu,
               child.parent_cpu, child.children_cpu, ok, check)  # fmt: skip


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
    database_before = measure.tree_cpu(server.pid)
    try:
        child = run_tree(
            [*programs.mediad_command(), "run", "--once"], env=env, cwd=work, log=work / "log"
        )
        database = measure.settled_tree_cpu(server.pid) - database_before
        result = asyncio.run(_results(db_url))
    finally:
        asyncio.run(server.drop_database(name))
    first, last = result["first"], result["last"]
    if isinstance(first, datetime) and isinstance(last, datetime):
        busy = (last - first).total_seconds()
    else:
        busy = float("nan")
    ok = child.returncode == 0 and result["done"] == result["total"] == len(files)
    check = f"exit {child.returncode}, {result['done']} of {len(files)} rows derived"
    if result["errors"]:
        check += f" (errors: {result['errors']})"
    return Run(tool, len(files), child.wall, busy, child.peak_rss, child.peak_pss, child.cpu,
               child.parent_cpu, child.children_cpu, ok, check, database)  # fmt: skip


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
    files = corpus(cache, args.photos, args.pngs, args.png_side)
    paths = [cache / f.name for f in files]
    photo_bytes = sum(f.size for f in files if f.name.endswith(".jpg"))
    png_bytes = sum(f.size for f in files if f.name.endswith(".png"))
    print(
        f"corpus: {args.photos:,} photos 4000x3000 ({photo_bytes / MB:,.0f} MB),"
        f" {args.pngs} PNGs {args.png_side}x{args.png_side} ({png_bytes / MB:,.0f} MB)"
    )
    runs: list[Run] = []
    with (
        postgres.embedded() as server,
        tempfile.TemporaryDirectory(prefix="mediad-bench-derive-", dir=args.scratch_dir) as tmp,
    ):
        work = Path(tmp)
        for round_ in range(args.rounds):
            for tool in args.tools:
                where = work / f"{round_}-{tool.replace(' ', '-').replace(',', '')}"
                if tool == "pillow":
                    runs.append(run_script(tool, PILLOW_SCRIPT, paths, where))
                elif tool == "pyvips":
                    runs.append(run_script(tool, PYVIPS_SCRIPT, paths, where))
                else:
                    runs.append(run_mediad(server, tool, cache, files, where,
                                           every_kind=tool == "mediad, all kinds",
                                           concurrency=args.concurrency))  # fmt: skip
                print(f"  {runs[-1].tool}: {runs[-1].files_per_s:.2f} files/s ({runs[-1].check})",
                      flush=True)  # fmt: skip
                shutil.rmtree(where, ignore_errors=True)
    scratch.stamp_cleanup(cache)

    report.print_table(
        f"thumbnail 320 + preview 1280 (WebP) per file, {PARALLELISM} decodes at a time;"
        f" {report.machine()}",
        ["tool", "files", "files/s", "derivatives/s", "busy s", "wall s", "peak RSS MB",
         "peak PSS MB", "CPU/file ms", "machine CPU s", "check"],
        [[r.tool, r.files, r.files_per_s, 2 * r.files_per_s, r.busy, r.wall, r.peak_rss / MB,
          r.peak_pss / MB, r.cpu_per_file_ms, r.cpu, r.check] for r in runs],
    )  # fmt: skip

    def best(tool: str) -> Run | None:
        found = [r for r in runs if r.tool == tool and r.ok]
        return max(found, key=lambda r: r.files_per_s) if found else None

    verdict = targets.Verdict()
    verdict.check(r.ok for r in runs)
    mediad, pillow, pyvips = best("mediad"), best("pillow"), best("pyvips")
    judged = []
    if mediad is not None and (pillow or pyvips):
        faster = max([r for r in (pillow, pyvips) if r], key=lambda r: r.files_per_s)
        judged.append(verdict.judge(targets.Target(
            f"mediad / {faster.tool} (the faster script), files/s",
            report.ratio(mediad.files_per_s, faster.files_per_s), TARGET_RATIO,
        )))  # fmt: skip
    else:
        verdict.not_measured("mediad against the scripts")
    if mediad is not None:
        peak = max(r.peak_rss for r in runs if r.tool.startswith("mediad"))
        judged.append(verdict.judge(targets.Target(
            "mediad peak RSS (daemon, forkserver, decoder workers)", peak / MB,
            TARGET_RSS / MB, unit=" MB", below=True,
        )))  # fmt: skip
    verdict.print_targets("targets", judged)
    return verdict.exit_status()


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
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("MEDIAD_BENCH_CACHE", "/tmp/mediad-bench-cache")),
        help="where the generated corpus is kept between runs (/tmp/mediad-bench-cache)",
    )
    parser.add_argument(
        "--scratch-dir", type=Path, default=None,
        help="where runs write (default: the system's temp dir; same filesystem as the cache"
        " dir, so files are linked, not copied)",
    )  # fmt: skip
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

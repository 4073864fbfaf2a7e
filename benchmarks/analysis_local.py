"""Local analysis throughput: mediad's `analyze_image_file` against the same OCR and hash library
calls from a plain script, with the same parallelism.

    .venv/bin/python benchmarks/analysis_local.py [--pictures 200] [--workers N]

The pictures: `--pictures` photo-like 1080x720 JPEGs (blurred colour blotches) with two or three
lines of white text outlined in black, as memes carry it, generated into a temporary directory.
Both sides run in a pool of `--workers` processes (default: one per core, what a stage's
decoder pool would have), each worker warmed up first (engine loaded) and the clock started
once every worker is ready:

- mediad: `mediad.analysis.local.analyze_image_file(path)` per picture, the whole document
  (OCR with language guess, dHash, pHash, phash256, quality, colours, blank flag).
- bare: `bare_analyze(path)`: Pillow opens and shrinks the picture to the same bound, RapidOCR
  reads it with the same models and threads, and numpy computes a dHash and a pHash. Nothing
  else: what a plain script would do for the same OCR and hashes.

Printed: pictures/s of each, their ratio, CPU seconds per picture (the workers' own, user +
system, warm-up excluded) and the largest worker's peak RSS (VmHWM). The script exits 1 when
the ratio is under 0.9, or when a side misreads more than 5% of the pictures' text. `bare_side`
and `mediad_side` are functions, for a stage-level comparison to reuse.
"""

# ruff: noqa: E402 (the imports must follow the sys.path repair below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's own directory would come first on sys.path, and the sibling
# benchmark `queue.py` would then shadow the standard library's queue.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
sys.path.insert(0, str(_REPO))

import argparse
import multiprocessing
import multiprocessing.pool
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import report, targets

TARGET_RATIO = 0.9
# A side that reads less of the text than this misreads: its speed means nothing.
MIN_READ = 0.95
MAX_PX = 1024
WORDS = [
    "archive",
    "media",
    "river",
    "stone",
    "window",
    "garden",
    "market",
    "summer",
    "winter",
    "orange",
    "silver",
    "planet",
    "coffee",
    "ticket",
    "bridge",
    "castle",
    "forest",
    "island",
    "rocket",
    "camera",
]


@dataclass
class Side:
    """One side's pass over the pictures."""

    name: str
    pictures: int
    seconds: float
    cpu_seconds: float  # the workers', warm-up excluded
    peak_rss: int  # bytes: the largest worker's VmHWM
    texts: list[str]

    @property
    def per_s(self) -> float:
        return report.rate(self.pictures, self.seconds)

    @property
    def cpu_per_picture(self) -> float:
        return self.cpu_seconds / self.pictures if self.pictures else float("nan")


# --- the pictures ----------------------------------------------------------------------------


def make_pictures(directory: Path, count: int, workers: int) -> list[tuple[Path, list[str]]]:
    """`count` photo-like 1080x720 JPEGs with text, and the lines drawn on each."""
    jobs = [(directory / f"photo-{i:04d}.jpg", i) for i in range(count)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_make_picture, jobs)


def _make_picture(job: tuple[Path, int]) -> tuple[Path, list[str]]:
    from tests import media

    path, seed = job
    rng = random.Random(seed)
    lines = [
        " ".join(rng.choice(WORDS).upper() for _ in range(rng.randint(2, 3)))
        for _ in range(rng.randint(2, 3))
    ]
    picture = media.photo_with_text(lines, seed=seed, size=rng.choice((40, 48, 56, 64)))
    path.write_bytes(media.encoded(picture, "JPEG", quality=85))
    return path, lines


# --- the bare side: the same library calls from a plain script --------------------------------

_bare_engine: Any = None


def bare_init(ready: Any) -> None:
    """A bare worker: RapidOCR with the bundled models, one thread, as mediad configures it."""
    global _bare_engine
    import cv2
    import rapidocr
    from rapidocr import RapidOCR

    cv2.setNumThreads(1)
    models = Path(rapidocr.__file__).parent / "models"
    _bare_engine = RapidOCR(
        params={
            "Global.log_level": "error",
            "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
            "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
            "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
            "Det.limit_type": "max",
            "Det.limit_side_len": 8192,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )
    _warm_up(lambda path: bare_analyze(path))
    ready.put(os.getpid())


def bare_analyze(path: str | Path) -> str:
    """Open, shrink, OCR, dHash and pHash one picture; its text."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (MAX_PX, MAX_PX))
        picture = ImageOps.exif_transpose(img).convert("RGB")
    picture.thumbnail((MAX_PX, MAX_PX), Image.Resampling.LANCZOS)
    result = _bare_engine(np.ascontiguousarray(np.asarray(picture)[:, :, ::-1]))
    gray = picture.convert("L")
    small = np.asarray(gray.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    dhash = small[:, 1:] > small[:, :-1]
    thumb = np.asarray(gray.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    k = np.arange(32)
    dct = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 64)
    low = (dct @ thumb @ dct.T)[:8, :8]
    phash = low > np.median(low)
    assert dhash.size == phash.size == 64
    return "\n".join(result.txts or ())


# --- the mediad side ----------------------------------------------------------------------------


def mediad_init(ready: Any) -> None:
    """A mediad worker: the first analysis loads the engine and the language model."""
    _warm_up(lambda path: mediad_analyze(path))
    ready.put(os.getpid())


def mediad_analyze(path: str | Path) -> str:
    from mediad.analysis import local

    return str(local.analyze_image_file(path, max_px=MAX_PX)["visible_text"])


def _warm_up(analyze: Callable[[Path], object]) -> None:
    from tests import media

    with tempfile.TemporaryDirectory(prefix="mediad-bench-warm-") as tmp:
        path = Path(tmp) / "warm.jpg"
        path.write_bytes(media.encoded(media.photo_with_text(["WARM UP"], 640, 480), "JPEG"))
        analyze(path)


# --- one side's pass ----------------------------------------------------------------------------


def run_side(
    name: str,
    init: Callable[[Any], None],
    task: Callable[[str | Path], str],
    paths: Sequence[Path],
    workers: int,
) -> Side:
    """`task` over `paths` in `workers` spawned processes, each set up by `init` beforehand."""
    import psutil

    context = multiprocessing.get_context("spawn")
    ready = context.Manager().Queue()
    with context.Pool(workers, initializer=init, initargs=(ready,)) as pool:
        pids = [ready.get(timeout=600) for _ in range(workers)]
        procs = [psutil.Process(pid) for pid in pids]
        cpu0 = sum(_cpu(p) for p in procs)
        started = time.perf_counter()
        texts = pool.map(task, paths, chunksize=1)
        seconds = time.perf_counter() - started
        cpu = sum(_cpu(p) for p in procs) - cpu0
        peak = max(_vm_hwm(pid) for pid in pids)
    return Side(name, len(paths), seconds, cpu, peak, texts)


def bare_side(paths: Sequence[Path], workers: int) -> Side:
    """The plain-script side: the same OCR and hash calls, `workers` processes."""
    return run_side("bare rapidocr + hashes", bare_init, bare_analyze, paths, workers)


def mediad_side(paths: Sequence[Path], workers: int) -> Side:
    """mediad's `analyze_image_file`, `workers` processes."""
    return run_side("mediad analyze_image_file", mediad_init, mediad_analyze, paths, workers)


def _cpu(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def read_share(side: Side, lines: Sequence[list[str]]) -> float:
    """The share of pictures whose every drawn line the side read (spaces aside)."""

    def letters(text: str) -> str:
        return "".join(text.split()).upper()

    good = sum(
        letters(text) == letters("".join(drawn))
        for text, drawn in zip(side.texts, lines, strict=True)
    )
    return good / len(lines) if lines else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pictures", type=int, default=200, help="1080x720 photos with text")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pool size")
    args = parser.parse_args(argv)
    print(f"local analysis benchmark on {report.machine()}, {args.workers} workers")

    with tempfile.TemporaryDirectory(prefix="mediad-analysis-bench-") as tmp:
        made = make_pictures(Path(tmp), args.pictures, args.workers)
        paths = [path for path, _ in made]
        lines = [drawn for _, drawn in made]
        bare = bare_side(paths, args.workers)
        mine = mediad_side(paths, args.workers)

    report.print_table(
        f"{args.pictures} pictures, 1080x720 JPEG with text, analysed at {MAX_PX} px",
        ["side", "pictures/s", "CPU s/picture", "peak RSS MB", "text read"],
        [
            [
                side.name,
                side.per_s,
                side.cpu_per_picture,
                side.peak_rss / report.MB,
                f"{read_share(side, lines):.0%}",
            ]
            for side in (bare, mine)
        ],
    )
    ratio = report.ratio(mine.per_s, bare.per_s)
    print(f"\nratio mediad / bare: {ratio:.2f}")

    verdict = targets.Verdict()
    verdict.check(read_share(side, lines) >= MIN_READ for side in (bare, mine))
    judged = [targets.Target("pictures/s mediad / bare", ratio, TARGET_RATIO)]
    verdict.print_targets("Targets", [verdict.judge(t) for t in judged])
    return verdict.exit_status()


if __name__ == "__main__":
    sys.exit(main())

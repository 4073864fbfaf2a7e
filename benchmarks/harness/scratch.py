"""The disk and page cache between runs: room checked, outputs set aside, memory primed.

Two costs of this machine, not of any tool, would otherwise fall on whichever run comes next:
- Deleting thousands of files just before the next tool writes thousands: ext4 without a
  journal skips inodes freed in the last one to five minutes (`recently_deleted`), reading
  their inode table blocks for every file it creates. So the files stay until the end.
- On a virtual machine, the first write to a page of guest memory makes the host back it:
  2 GB written into never-used memory cost 5-8 s of system time here, into reused memory
  0.6 s. Kept outputs would make the page cache grow into never-used memory, run after run,
  so their pages are handed back (they are clean once synced) for the next run to reuse.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from benchmarks.harness import report

# When a run's own cleanup ended: the next run warns if it starts within ext4's window
# (RECENTCY_DIRTY in fs/ext4/ialloc.c) of skipping recently freed inodes.
CLEANUP_STAMP = "last-cleanup"
RECENT_DELETES_SECONDS = 300


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    """--cache-dir: where generated corpora are kept between runs, one for every benchmark."""
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("MEDIAD_BENCH_CACHE", "/tmp/mediad-bench-cache")),
        help="where the generated corpus is kept between runs (/tmp/mediad-bench-cache)",
    )


def check_room(path: Path, needed: int, what: str, smaller: str) -> None:
    """Exit unless `path` has `needed` bytes free; `smaller` names the options for less."""
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise SystemExit(
            f"{what} {path} has {free / report.MB:,.0f} MB free; this run needs about"
            f" {needed / report.MB:,.0f} MB (use {smaller} for a smaller run)"
        )


def set_aside(work: Path) -> None:
    """Move a run's outputs out of the next run's way, keeping their files but not their memory
    (see the module docstring)."""
    spent = work.parent / "spent"
    spent.mkdir(exist_ok=True)
    kept = spent / f"{sum(1 for _ in spent.iterdir())}-{work.name}"
    work.rename(kept)
    os.sync()
    for folder, _, names in os.walk(kept):
        for name in names:
            drop_cached(Path(folder, name))


def drop_cached(path: Path) -> None:
    """Hand a synced regular file's pages in the page cache back to the kernel's free memory."""
    if not path.is_file() or path.is_symlink():
        return
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def prime_page_cache(scratch: Path, size: int) -> None:
    """Write `size` bytes once and hand their pages back, so that the first run, too, writes
    into memory the host has already backed."""
    path = scratch / "prime"
    block = bytes(8 * report.MB)
    with open(path, "wb", buffering=0) as handle:
        for _ in range(0, size, len(block)):
            handle.write(block)
    os.sync()
    drop_cached(path)
    path.unlink()


def stamp_cleanup(cache: Path) -> None:
    """Note that this run's scratch files were just deleted (for `warn_if_recent_cleanup`)."""
    (cache / CLEANUP_STAMP).touch()


def warn_if_recent_cleanup(cache: Path) -> None:
    """Say so when the last run's cleanup (tens of thousands of deletions) was minutes ago."""
    try:
        age = time.time() - (cache / CLEANUP_STAMP).stat().st_mtime
    except FileNotFoundError:
        return
    if age < RECENT_DELETES_SECONDS:
        print(
            f"note: the last run deleted its scratch files {age:.0f} s ago; ext4 without a"
            f" journal creates files more slowly for up to {RECENT_DELETES_SECONDS // 60}"
            " minutes after mass deletions (see benchmarks/harness/scratch.py), so every"
            " tool's figures may be low"
        )

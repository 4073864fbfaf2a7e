"""Download throughput: mediad against aria2c and the seeds' thread pool, one big file, bombs.

    .venv/bin/python benchmarks/download.py [--photos 5000] [--big-size 2GB] [--repeat 2]
        [--latency-ms 20] [--latency-photos N]

A local nginx (loopback only) serves a corpus of real, distinct JPEG photos of 50-300 kB and
one big real MP4. In one run, side by side:

- the photos, fetched by `mediad run --once` (download stage only: archive and analysis are
  disabled, the default; every file is hashed MD5 + SHA-256, sniffed, opened by Pillow and its
  JPEG structure walked to the end, fsynced into the content-addressed store and recorded in
  PostgreSQL), by `aria2c -j 32` (download only) and by the seeds' approach (a
  ThreadPoolExecutor of 5 blocking urllib downloads, an MD5 per file, files written to disk);
  mediad twice a round: with its decoders in worker processes (the default) and in-process
  (MEDIAD_MEDIA_IN_PROCESS=true: the same decode tasks in the daemon's own threads, a switch
  for this comparison only), which of the two goes first swapping every round;
- the big file, fetched by mediad and by `curl -s URL | tee >(md5sum >/dev/null) | sha256sum`
  (no file written), with mediad's peak RSS;
- bombs: 4 PNGs of 13000x13000 RGBA (0.7 MB each on the wire, 676 MB decoded) spread among 40
  of the photos, in one `mediad run --once`, with its seconds, its whole process tree's peak
  RSS and the rows completed; then the same in-process, for the contrast only (unless
  --skip bombs-in-process, or less than about 3.7 GB is available);
- the photos once more a round with the HTTP endpoint on (http.listen on a free loopback port)
  and /metrics scraped every second the way Prometheus scrapes it, against the same daemon with
  it off (the first configuration above), in alternating order; judged on the median files/s
  of the rounds (--skip http leaves it out);
- a CDN-like scenario besides (never instead of) the zero-latency one (--latency-ms, 20 by
  default; 0 skips it): the photos (all of them, or the first --latency-photos) fetched by the
  same three tools from a second nginx that answers each request after N ms (3N for a
  connection's first request: over https its TCP and TLS handshakes cost a round trip each).
  The delay is nginx's echo module (echo_sleep, a timer, no CPU); Debian:
  libnginx-mod-http-echo.

Which table judges which target: the seeds' approach is five threads waiting on the network,
and 3x of it is a claim about concurrency under a CDN's latency. On loopback nothing waits:
the seeds' threads are bound by CPU (no probe, fsync or database), so there the seeds' ratio
is printed but the target is judged in the latency table (on loopback only when the latency
scenario is skipped). The aria2c target (1.0x) is judged in both tables. The workers' cost,
mediad / mediad in-process >= 0.95x, is judged on loopback, where it shows (nothing waits,
every CPU second is throughput); the latency table shows it only. The bombs' targets: peak RSS
of the daemon and its decoders under 1.2 GB, every row completed (decoders in workers; the
in-process run is printed, never judged).

mediad runs as a subprocess, timed from spawn to exit (start-up included), against a fresh
database on an embedded PostgreSQL; the rate without start-up comes from the row events
(first download_started to last media_downloaded). After each run every row is checked:
completed, right SHA-256 and MD5, sniffed type, file present with the right size. Its decoder
workers are children of a forkserver the daemon starts, so its peak RSS and CPU are its whole
process tree's (measure.run_child with tree=True): the peak of the sum of every member's RSS,
sampled from /proc every 10 ms (members found by parent pid every 100 ms; shared pages count
once per process, so this overstates; the tree's PSS is printed beside it, sampled every
0.5 s), and the CPU of the daemon plus that of the descendants it leaves behind (the forkserver
outlives it, its workers' times in its own): this script is their child subreaper while
mediad runs and reaps them. The daemon's own VmHWM is printed too.

Choices:
- daemon.processes (--processes): 0, one worker process per core, by default.
- 32 connections to the origin for both tools (--connections): mediad's
  per_host_concurrency (every URL is on one host, 127.0.0.1) and aria2c's -j, its concurrent
  downloads (one connection each). mediad's download.concurrency (--concurrency) is the rows it
  has in flight, 64 by default: a row holds its place from claim to record, through its hashes,
  probe, fsyncs and database write, while an aria2c download ends with its last byte written. At
  32 rows for 32 connections, every connection would sit idle while its row is probed and
  recorded (measured on 2 cores, 5,000 photos, alternating: 64 rows made 10% more files/s on
  loopback and 22% more at 20 ms latency than 32, with the same 32 connections).
- The photos are seeded noise upscaled 4x (about 0.4 byte per pixel, like a real photo, so a
  300 kB photo is about 1000x750), with camera EXIF; 200 are encoded and each photo is one of
  them plus its own JPEG COM segment: real, decodable, all distinct bytes, generated in seconds.
- The big file is a 4 s H.264/AAC MP4 followed by a top-level `free` box padding it to size.
  mediad must prove it is media (random bytes would fail as not_media); FFmpeg's mov demuxer
  reads ftyp/mdat/moov and seeks past the padding, so probing takes milliseconds at any size.
- The curl pipeline's `>(md5sum)` is a named pipe here: same processes and data flow, but bash
  can wait for md5sum (a process substitution is orphaned by tee) so it is timed and counted.
- Every run prints where the machine's CPU went (the tool, nginx, PostgreSQL, other processes):
  on a shared host, a slow figure can then be told from a busy machine.

The generated corpus is cached under --cache-dir (default /tmp/mediad-bench-cache) so reruns
start at once; delete that directory to reclaim its space. Scratch outputs are kept until the
benchmark ends, then deleted: deleting thousands of files right before the next tool writes
thousands slows that tool (ext4 skips recently freed inodes), so every run's files stay and the
scratch dir needs room for all of them (about 15 GB by default). Their pages in the page cache
are dropped after each run, and some memory is written and dropped before the first: on a
virtual machine, writing into memory the guest never used is several times slower, and would
otherwise slow whichever run first needed more of it (see benchmarks/harness/scratch.py).

Needs nginx, aria2c, curl and bash: on Debian/Ubuntu `sudo apt-get install -y nginx-light aria2
curl` (`nginx` where nginx-light does not exist), or run this script with --install-tools as
root.
"""

# ruff: noqa: E402 (the imports must follow the sys.path repair below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's own directory would come first on sys.path, and the sibling
# benchmark `queue.py` would then shadow the standard library's queue (asyncio imports it).
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
sys.path.insert(0, str(_REPO))

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import asyncpg
import psutil

from benchmarks.harness import (
    corpus,
    measure,
    origins,
    postgres,
    programs,
    report,
    scratch,
    targets,
)
from benchmarks.harness.corpus import CorpusFile
from benchmarks.harness.runs import Run
from mediad import config as mediad_config

TARGET_VS_SEEDS = 3.0
TARGET_VS_ARIA2 = 1.0
TARGET_VS_CURL = 1.0
TARGET_RSS_MB = 150.0
# Decoders in worker processes must not make downloads slower than in the daemon's threads.
TARGET_VS_IN_PROCESS = 0.95
# The bombs beside photos: the whole daemon, decoder workers included, stays under this.
TARGET_BOMBS_RSS_MB = 1200.0
# The HTTP endpoint on and scraped every second must cost the downloads at most 3%.
TARGET_HTTP_ON = 0.97
SCRAPE_INTERVAL = 1.0

# The two mediad configurations (tool names start with these; see `best`).
MEDIAD = "mediad run --once"  # decoders in worker processes: the default
IN_PROCESS = "mediad in-process"  # MEDIAD_MEDIA_IN_PROCESS=true: decoders in the daemon's threads
HTTP_ON = "mediad http on"  # the default, with http.listen on and /metrics scraped every second
TOOL_LABELS = {MEDIAD: "mediad", IN_PROCESS: "mediad in-process", HTTP_ON: "mediad http on"}

# The bombs table: BOMBS PNGs of BOMB_SIDE x BOMB_SIDE RGBA among BOMB_PHOTOS photos.
BOMBS = 4
BOMB_SIDE = 13000
BOMB_PHOTOS = 40

MB = report.MB
PHOTO_MEAN = (corpus.SMALL_MIN + corpus.SMALL_MAX) // 2
SEEDS_WORKERS = 5
# Above this many CPUs busy with other work during a run, its figure is flagged as disturbed.
NOISY_CPUS = 0.25

PROGRAMS = {
    "nginx": "the origin server",
    "aria2c": "the aria2c comparison",
    "curl": "the curl | tee | sha256sum comparison",
    "bash": "the curl pipeline",
    "tee": "the curl pipeline",
    "md5sum": "the curl pipeline",
    "sha256sum": "the curl pipeline",
}


@dataclass(frozen=True)
class Bench:
    """What every run of this benchmark shares: the servers, the programs and mediad's settings."""

    server: postgres.Server
    programs: dict[str, str]
    scratch: Path
    repeat: int
    skip: set[str]
    concurrency: int  # download.concurrency: mediad's rows in flight
    # mediad's per_host_concurrency (every URL is on one host) and aria2c's -j.
    connections: int
    max_file_size: int
    # Where to write py-spy profiles (collapsed stacks); None: no profiling.
    profile_dir: Path | None
    # The mediad executable (and leading arguments); None: the one next to this Python.
    mediad_command: tuple[str, ...] | None
    # daemon.processes for mediad (0: one per core).
    processes: int


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # `kill` stops the run as Ctrl-C does: children stopped, databases and scratch removed.
    signal.signal(signal.SIGTERM, _interrupted)
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    found = find_programs(skip, args.install_tools)
    latency = args.latency_ms / 1000
    module = find_echo_module(found["nginx"], args.install_tools) if latency > 0 else None

    latency_photos = min(args.latency_photos or args.photos, args.photos) if latency > 0 else 0
    check_disk_room(args, skip, latency_photos)

    report.quiet_logging()
    print(f"download benchmark; {report.machine()}; load average {os.getloadavg()[0]:.2f}")
    cache = args.cache_dir
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    scratch.warn_if_recent_cleanup(cache)
    photos = corpus.photos(cache, args.photos) if args.photos > 0 else []
    big = corpus.big_mp4(cache, args.big_size) if "big" not in skip else None
    bombs: list[CorpusFile] = []
    if "bombs" not in skip and "mediad" not in skip:
        # The bombs' photos: the corpus's first, or a small corpus of their own.
        some = photos if len(photos) >= BOMB_PHOTOS else corpus.photos(cache, BOMB_PHOTOS)
        bombs = with_bombs(some[:BOMB_PHOTOS], corpus.bombs(cache, BOMBS, BOMB_SIDE))
    describe_corpus(photos, big, bombs)
    corpus.warm_page_cache(cache, [*photos, *([big] if big else []), *bombs])
    first = photos[0] if photos else big
    if first is None:
        raise SystemExit("nothing to measure: --photos 0 and --skip big")

    photo_runs: list[Run] = []
    big_runs: list[Run] = []
    bomb_runs: list[Run] = []
    latency_runs: list[Run] = []
    with (
        postgres.embedded() as server,
        tempfile.TemporaryDirectory(prefix="mediad-bench-dl-", dir=args.scratch_dir) as tmp,
    ):
        bench = Bench(
            server,
            found,
            Path(tmp),
            args.repeat,
            skip,
            args.concurrency,
            args.connections,
            max(3 * 1000**3, 2 * big_bytes(args, skip)),
            args.profile.resolve() if args.profile else None,
            tuple(args.mediad_command) if args.mediad_command else None,
            args.processes,
        )
        primed = max(args.photos * PHOTO_MEAN, big_bytes(args, skip)) + 100 * MB
        scratch.prime_page_cache(bench.scratch, primed)
        with origins.nginx(found["nginx"], cache, bench.scratch / "nginx", first.name) as origin:
            print(
                f"nginx at {origin.url}; mediad: download.concurrency {bench.concurrency},"
                f" per_host_concurrency {bench.connections} (one host: 127.0.0.1);"
                f" aria2c -j {bench.connections}"
            )
            account = measure.CpuAccount({"nginx": origin.pid}, {"PostgreSQL": server.pid})
            photo_runs = fetch_photos(bench, account, photos, origin.url, "photos", "photos")
            if big is not None:
                big_runs = fetch_big(bench, account, big, origin.url)
            if bombs:
                bomb_runs = fetch_bombs(bench, account, bombs, origin.url)
        if latency > 0 and photos:
            # A second nginx, so the zero-latency figures above come from a server without
            # the echo module.
            with origins.nginx(
                found["nginx"],
                cache,
                bench.scratch / "nginx-latency",
                first.name,
                latency=latency,
                module=module,
            ) as delayed:
                account = measure.CpuAccount({"nginx": delayed.pid}, {"PostgreSQL": server.pid})
                files = photos[:latency_photos]
                label = latency_label(latency)
                latency_runs = fetch_photos(bench, account, files, delayed.url, label, "latency")
    scratch.stamp_cleanup(cache)
    print(f"\ncorpus kept in {cache} for the next run (delete it to free the space)")

    verdict = targets.Verdict()
    # The bombs in-process are a contrast, printed only: a failure there judges nothing.
    judged_bombs = [r for r in bomb_runs if r.tool.startswith(MEDIAD)]
    verdict.check(r.ok for r in [*photo_runs, *big_runs, *judged_bombs, *latency_runs])
    summarize(verdict, photo_runs, big_runs, bomb_runs, latency_runs, args.repeat, latency)
    return verdict.exit_status()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=5000, help="photos to fetch (5000)")
    parser.add_argument(
        "--big-size",
        type=mediad_config.parse_size,
        default="2GB",
        help="size of the big file, e.g. 2GB, 200MB (2GB)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="interleaved runs of each tool, their order alternating; the median counts (3)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="mediad's daemon.processes: worker processes (0, the default: one per core)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="mediad's download.concurrency: rows in flight, from claim to record (64)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="connections to the origin: mediad's per_host_concurrency and aria2c -j (32)",
    )
    scratch.add_cache_dir(parser)
    parser.add_argument(
        "--scratch-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where downloads are written (and deleted after each run)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run mediad under `py-spy record` (raw collapsed stacks into DIR, every process of"
        " its tree); slows mediad",
    )
    programs.add_mediad_command(parser)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="also run the photos against a CDN-like origin answering after this many ms (a"
        " connection's first request: 3x, its TCP and TLS handshakes); needs nginx's echo"
        " module (Debian: libnginx-mod-http-echo). Default 20; 0: no such scenario",
    )
    parser.add_argument(
        "--latency-photos",
        type=int,
        default=None,
        help="photos fetched in the latency scenario, the first of the corpus (default: all)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated: mediad,in-process,http,aria2c,seeds,curl,big,bombs,"
        "bombs-in-process (in-process: mediad's runs with media.in_process, in every table;"
        " http: the runs with the HTTP endpoint on and scraped)",
    )
    parser.add_argument(
        "--install-tools",
        action="store_true",
        help="apt-get install nginx-light aria2 curl if missing (root only)",
    )
    return parser.parse_args(argv)


def big_bytes(args: argparse.Namespace, skip: set[str]) -> int:
    return 0 if "big" in skip else int(args.big_size)


def check_disk_room(args: argparse.Namespace, skip: set[str], latency_photos: int) -> None:
    """Exit unless the cache and scratch dirs have room for the corpus and every run's outputs."""
    photos_bytes = args.photos * PHOTO_MEAN
    big = big_bytes(args, skip)
    smaller = "--photos / --big-size"
    scratch.check_room(args.cache_dir, photos_bytes + big + 100 * MB, "the cache dir", smaller)
    # Every run's outputs stay until the end (see benchmarks/harness/scratch.py).
    writers = sum(1 for tool in ("mediad", "aria2c", "seeds") if tool not in skip)
    if "mediad" not in skip and "in-process" not in skip:
        writers += 1
    scratch_bytes = writers * (args.repeat * args.photos + latency_photos) * PHOTO_MEAN
    if "mediad" not in skip:
        scratch_bytes += args.repeat * big
    if "mediad" not in skip and "bombs" not in skip:
        scratch_bytes += 2 * (BOMBS * 1 * MB + BOMB_PHOTOS * PHOTO_MEAN)
    scratch.check_room(args.scratch_dir, scratch_bytes + 200 * MB, "the scratch dir", smaller)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --- the programs ------------------------------------------------------------------------------


def find_programs(skip: set[str], install: bool) -> dict[str, str]:
    """Every program this run needs, by name; apt-get installs the missing with --install-tools."""
    needed = dict(PROGRAMS)
    if "aria2c" in skip:
        del needed["aria2c"]
    if "big" in skip or "curl" in skip:
        for name in ("curl", "bash", "tee", "md5sum", "sha256sum"):
            del needed[name]
    packages = [["nginx-light", "aria2", "curl"], ["nginx", "aria2", "curl"]]
    return programs.require_all(
        needed,
        packages if install else None,
        "install them, e.g. on Debian/Ubuntu:\n"
        "  sudo apt-get update && sudo apt-get install -y nginx-light aria2 curl\n"
        "  (use `nginx` instead of `nginx-light` on releases without it)\n"
        "or rerun this script as root with --install-tools",
    )


def find_echo_module(nginx: str, install: bool) -> Path:
    """nginx's echo module for the latency scenario; apt-get installs it with --install-tools."""
    module = origins.echo_module(nginx)
    if module is None and install:
        programs.apt_install(["libnginx-mod-http-echo"])
        module = origins.echo_module(nginx)
    if module is None:
        raise SystemExit(
            f"--latency-ms needs nginx's echo module ({origins.ECHO_MODULE}) in its modules"
            " path:\n  sudo apt-get install -y libnginx-mod-http-echo\n"
            "or rerun this script as root with --install-tools"
        )
    return module


def describe_corpus(
    photos: Sequence[CorpusFile], big: CorpusFile | None, bombs: Sequence[CorpusFile]
) -> None:
    sizes = [f.size for f in photos]
    if sizes:
        print(
            f"photos: {len(photos):,} JPEGs, {sum(sizes) / MB:,.0f} MB, "
            f"{min(sizes) / 1000:.0f}-{max(sizes) / 1000:.0f} kB "
            f"(mean {sum(sizes) / len(sizes) / 1000:.0f} kB); big file: "
            + (f"{big.size / MB:,.0f} MB MP4" if big else "skipped")
        )
    pngs = [f.size for f in bombs if f.name.endswith(".png")]
    if pngs:
        print(
            f"bombs: {len(pngs)} PNGs of {BOMB_SIDE}x{BOMB_SIDE} RGBA,"
            f" {min(pngs) / MB:.2f}-{max(pngs) / MB:.2f} MB on the wire,"
            f" {BOMB_SIDE**2 * 4 / MB:,.0f} MB each decoded, among {len(bombs) - len(pngs)} photos"
        )


# --- the tools side by side --------------------------------------------------------------------


def fetch_photos(
    bench: Bench,
    account: measure.CpuAccount,
    files: Sequence[CorpusFile],
    base_url: str,
    label: str,
    scenario: str,
) -> list[Run]:
    """`files` fetched by mediad (decoders in workers, and in-process), aria2c and the seeds in
    turn, `bench.repeat` times; the two mediad configurations swap places every round, so a
    drift in the machine's load favours neither."""
    done: list[Run] = []
    # (in_process, http): the default first; the HTTP endpoint's cost on loopback only, where
    # nothing waits and every CPU second it takes is throughput lost.
    configurations = [(False, False)]
    if "in-process" not in bench.skip:
        configurations.append((True, False))
    if "http" not in bench.skip and scenario == "photos":
        configurations.append((False, True))
    for attempt in range(bench.repeat if files else 0):
        print(f"{label}, run {attempt + 1} of {bench.repeat}:", flush=True)
        tools: list[Callable[[], Run]] = []
        for in_process, http in configurations[:: -1 if attempt % 2 else 1]:
            if "mediad" in bench.skip:
                break
            name = f"bench_dl_{scenario}_{attempt}" + ("_in_process" if in_process else "")
            name += "_http" if http else ""
            tool = mediad_tool(bench, in_process, http)
            tools.append(functools.partial(run_mediad, bench, account, name, tool, files,
                                           base_url, in_process=in_process, http=http))  # fmt: skip
        if "aria2c" not in bench.skip:
            tools.append(functools.partial(run_aria2, bench, account, files, base_url))
        if "seeds" not in bench.skip:
            tools.append(functools.partial(run_seeds, bench, account, files, base_url))
        # Every other round the other way round, so a drift in the machine's load favours no
        # tool.
        for run_tool in tools[:: -1 if attempt % 2 else 1]:
            done.append(print_run(run_tool()))
    return done


def mediad_tool(bench: Bench, in_process: bool, http: bool = False) -> str:
    kind = HTTP_ON if http else IN_PROCESS if in_process else MEDIAD
    processes = bench.processes or len(os.sched_getaffinity(0))
    return f"{kind} (c={bench.concurrency}/{bench.connections}, p={processes})"


def fetch_bombs(
    bench: Bench, account: measure.CpuAccount, files: Sequence[CorpusFile], base_url: str
) -> list[Run]:
    """The bombs among photos in one `mediad run --once`; then, unless skipped or short of
    memory, the same in-process, for the contrast (printed, never judged)."""
    print("bombs among photos:", flush=True)
    done = [print_run(run_mediad(bench, account, "bench_dl_bombs", mediad_tool(bench, False),
                                 files, base_url))]  # fmt: skip
    if "in-process" in bench.skip or "bombs-in-process" in bench.skip:
        return done
    # In-process nothing admits the decodes by their size: all the bombs may decode at once.
    needed = BOMBS * BOMB_SIDE**2 * 4 + 1000 * MB
    available = psutil.virtual_memory().available
    if available < needed:
        print(
            f"  in-process run skipped: {available / MB:,.0f} MB available, it may need"
            f" {needed / MB:,.0f} MB"
        )
        return done
    name = "bench_dl_bombs_in_process"
    tool = mediad_tool(bench, True)
    done.append(print_run(run_mediad(bench, account, name, tool, files, base_url,
                                     in_process=True)))  # fmt: skip
    return done


def with_bombs(photos: Sequence[CorpusFile], bombs: Sequence[CorpusFile]) -> list[CorpusFile]:
    """The photos with the bombs spread evenly among them (the first at the head)."""
    mixed = list(photos)
    step = len(mixed) // len(bombs) + 1 if bombs else 0
    for index, bomb in enumerate(bombs):
        mixed.insert(index * step, bomb)
    return mixed


def fetch_big(
    bench: Bench, account: measure.CpuAccount, big: CorpusFile, base_url: str
) -> list[Run]:
    """The big file fetched by mediad and the curl pipeline in turn, `bench.repeat` times."""
    done: list[Run] = []
    for attempt in range(bench.repeat):
        print(f"big file, run {attempt + 1} of {bench.repeat}:", flush=True)
        if "mediad" not in bench.skip:
            name = f"bench_dl_big_{attempt}"
            done.append(print_run(run_mediad(bench, account, name, MEDIAD, [big],
                                             base_url)))  # fmt: skip
        if "curl" not in bench.skip:
            done.append(print_run(run_curl(bench, account, big, base_url)))
    return done


def print_run(run: Run) -> Run:
    """One run's figures as soon as it ends, with where the machine's CPU went meanwhile."""
    status = "OK" if run.ok else "FAILED"
    busy = (
        f", {run.busy_files_per_s:,.0f} files/s {run.busy_mb_per_s:,.0f} MB/s without start-up"
        if run.busy_seconds == run.busy_seconds  # not NaN
        else ""
    )
    rss = f", peak RSS {run.peak_rss / MB:.0f} MB" if run.peak_rss == run.peak_rss else ""
    if run.own_peak_rss == run.own_peak_rss:  # mediad: the tree's peak, then its own
        rss += (
            f" (all its processes; PSS {run.peak_pss / MB:.0f} MB; the daemon's own"
            f" {run.own_peak_rss / MB:.0f} MB)"
        )
    costs = (
        f"CPU {run.cpu_seconds / run.files * 1000:.2f} ms/file"
        if run.files > 1
        else f"CPU {run.cpu_seconds:.2f} s"
    )
    outlived = run.descendants_cpu_seconds
    if outlived > 0:  # NaN or 0: nothing outlived the tool
        scale, unit = (1000 / run.files, "ms/file") if run.files > 1 else (1.0, "s")
        costs += (
            f" [daemon {(run.cpu_seconds - outlived) * scale:.2f}, decoders' forkserver and"
            f" workers {outlived * scale:.2f} {unit}]"
        )
    postgres_cpu = run.split.services.get("PostgreSQL", 0.0)
    if run.transactions is not None and run.files > 1:
        costs += f" (+ PostgreSQL {postgres_cpu / run.files * 1000:.2f} ms/file"
        costs += f", {run.transactions / run.files:.2f} DB transactions/file)"
    elif run.transactions is not None:
        costs += f" (+ PostgreSQL {postgres_cpu:.2f} s, {run.transactions}"
        costs += " DB transactions, start-up included)"
    sp = run.split
    if sp.wall > 0:
        servers = ", ".join(f"{name} {cpu / sp.wall:.2f}" for name, cpu in sp.services.items())
        costs += (
            f"; CPUs busy {sp.machine / sp.wall:.2f} of {os.cpu_count()}: this tool"
            f" {run.cpu_seconds / sp.wall:.2f}, {servers}, other processes {run.others:.2f}"
        )
    print(
        f"  {run.tool:<22} {run.files:>6,} files {run.seconds:7.2f} s  "
        f"{run.files_per_s:7,.0f} files/s {run.mb_per_s:7,.1f} MB/s{busy}{rss}\n"
        f"  {'':<22} {costs}\n"
        f"  {'':<22} check {status}: {run.check}",
        flush=True,
    )
    return run


# --- mediad ------------------------------------------------------------------------------------

INSERT_ROWS = """
INSERT INTO post_media (post_id, media_url, media_type)
SELECT 'bench-post-' || n, url, kind
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(url, kind, n)
"""

EVENT_SPAN = """
SELECT min((e ->> 'timestamp')::timestamptz) FILTER (WHERE e ->> 'event' = 'download_started'),
       max((e ->> 'timestamp')::timestamptz) FILTER (WHERE e ->> 'event' = 'media_downloaded')
FROM post_media, jsonb_array_elements(ai_analysis_log) AS e
"""

READ_ROWS = """
SELECT media_url, download_status, error_code, local_file_path, file_size, md5_sum, sha256_sum,
    mime_type
FROM post_media
"""

# What each corpus file is to mediad: the row's media_type, and the type it must sniff.
KINDS = {
    ".jpg": ("image", "image/jpeg"),
    ".png": ("image", "image/png"),
    ".mp4": ("video", "video/mp4"),
}


async def prepare_database(
    server: postgres.Server, name: str, urls: list[str], kinds: list[str]
) -> str:
    url = await server.create_mediad_database(name)
    async with postgres.connection(url) as conn:
        await conn.execute(INSERT_ROWS, urls, kinds)
    await postgres.vacuum_analyze(url, "post_media")
    return url


async def read_rows(url: str) -> tuple[list[asyncpg.Record], asyncpg.Record]:
    """Every row, and the span from the first download_started to the last media_downloaded."""
    async with postgres.connection(url) as conn:
        rows = await conn.fetch(READ_ROWS)
        span = await conn.fetchrow(EVENT_SPAN)
    assert span is not None
    return list(rows), span


def check_mediad_rows(
    rows: Sequence[asyncpg.Record], expected: dict[str, CorpusFile]
) -> tuple[bool, str, int]:
    """Every row completed, with the expected digests and type, and its file on disk; and how
    many rows passed all of it."""
    completed = right_digests = right_type = files_ok = whole = 0
    failures: dict[str, int] = {}
    for row in rows:
        want = expected[row["media_url"]]
        checks = [row["download_status"] == "completed"]
        if checks[0]:
            completed += 1
        else:
            key = f"{row['download_status']}:{row['error_code']}"
            failures[key] = failures.get(key, 0) + 1
        checks.append(row["sha256_sum"] == want.sha256 and row["md5_sum"] == want.md5)
        right_digests += checks[-1]
        checks.append(row["mime_type"] == KINDS[Path(want.name).suffix][1])
        right_type += checks[-1]
        path = row["local_file_path"]
        on_disk = False
        with contextlib.suppress(OSError, TypeError):
            on_disk = bool(path) and os.stat(path).st_size == want.size == row["file_size"]
        files_ok += on_disk
        whole += all(checks) and on_disk
    total = len(expected)
    ok = len(rows) == completed == right_digests == right_type == files_ok == total
    mimes = "/".join(sorted({KINDS[Path(f.name).suffix][1] for f in expected.values()}))
    detail = (
        f"rows={len(rows)}/{total} completed={completed} sha256+md5 match={right_digests}"
        f" mime {mimes}={right_type} files on disk with right size={files_ok}"
    )
    if failures:
        detail += " not completed: " + ", ".join(f"{k}={v}" for k, v in sorted(failures.items()))
    return ok, detail, whole


def mediad_command(bench: Bench, name: str) -> list[str]:
    command = [*(bench.mediad_command or programs.mediad_command()), "run", "--once"]
    if bench.profile_dir is None:
        return command
    # py-spy is then the child: its timings are slower and its peak RSS is py-spy's.
    py_spy = programs.require("py-spy", "--profile needs it: .venv/bin/pip install py-spy")
    bench.profile_dir.mkdir(parents=True, exist_ok=True)
    out = bench.profile_dir / f"{name}.txt"
    # --subprocesses: with several processes the parent only waits; the downloads are in its
    # workers, and the probes in theirs. --gil: only what holds the interpreter, so a thread
    # waiting for work or for fsync is not counted as busy (stacks start with the process).
    return [py_spy, "record", "--rate", "250", "--format", "raw", "--threads", "--subprocesses",
            "--gil", "--output", str(out), "--", *command]  # fmt: skip


def run_mediad(
    bench: Bench,
    account: measure.CpuAccount,
    name: str,
    tool: str,
    files: Sequence[CorpusFile],
    base_url: str,
    *,
    in_process: bool = False,
    http: bool = False,
) -> Run:
    """`mediad run --once` on `files`, with its decoders in worker processes (the default) or,
    `in_process`, in the daemon's own threads (media.in_process, for this comparison only);
    with `http`, its HTTP endpoint on and /metrics scraped every second while it runs."""
    urls = [f"{base_url}/{f.name}" for f in files]
    expected = dict(zip(urls, files, strict=True))
    kinds = [KINDS[Path(f.name).suffix][0] for f in files]
    db_url = asyncio.run(prepare_database(bench.server, name, urls, kinds))
    work = bench.scratch / name
    work.mkdir()
    env = programs.clean_environment(
        {
            "MEDIAD_DATABASE_URL": db_url,
            "MEDIAD_STORAGE_ROOT": str(work / "media"),
            "MEDIAD_STORAGE_MAX_FILE_SIZE": str(bench.max_file_size),
            "MEDIAD_DAEMON_STATE_DIR": str(work / "state"),
            "MEDIAD_DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.1/32",
            "MEDIAD_DOWNLOAD_CONCURRENCY": str(bench.concurrency),
            "MEDIAD_DOWNLOAD_PER_HOST_CONCURRENCY": str(bench.connections),
            "MEDIAD_DAEMON_PROCESSES": str(bench.processes),
            # The download stage only, as the docstring says: derive (on by default since it
            # was merged) would thumbnail every photo inside the figures.
            "MEDIAD_DERIVE_ENABLED": "false",
            "MEDIAD_LOG_LEVEL": "warning",
            "MEDIAD_LOG_FORMAT": "json",
            "MEDIAD_MEDIA_IN_PROCESS": "true" if in_process else "false",
        }
        | ({"MEDIAD_HTTP_LISTEN": f"127.0.0.1:{origins.free_port()}"} if http else {})
    )
    # The config must come from the environment alone: cwd has no config.toml.
    mediad_config.load(None, env=env)
    xacts_before = asyncio.run(postgres.transactions(db_url))
    log_path = work / "mediad.log"
    command = mediad_command(bench, name)
    os.sync()  # earlier runs' dirty pages are not this run's to write back
    try:
        with (
            log_path.open("wb") as log,
            account.measure() as split,
            Scraper(env.get("MEDIAD_HTTP_LISTEN", "")) as scraper,
        ):
            # tree: the peak RSS and CPU of the daemon and all its descendants (the decoders'
            # forkserver and its workers), see measure.ProcessTree.
            child = measure.run_child(command, env=env, cwd=work, stdout=log, stderr=log, tree=True)
        # Backends flush their statistics when they exit, and mediad's have exited.
        xacts = asyncio.run(postgres.transactions(db_url)) - xacts_before - 1
        rows, (first_started, last_downloaded) = asyncio.run(read_rows(db_url))
        ok, check, completed = check_mediad_rows(rows, expected)
        if http:
            check += f"; /metrics scraped {scraper.scrapes} times ({scraper.failed} failed)"
            # A run too short for a scrape measured nothing of the endpoint's cost; a scrape
            # timing out now and then on a starved machine is no fault of the endpoint's, but
            # more than one in ten is.
            ok = ok and scraper.scrapes > 0 and scraper.failed * 10 <= scraper.scrapes
        if child.returncode != 0:
            ok = False
            check = f"exit status {child.returncode}; " + check
        log_lines = log_path.read_text(errors="replace").splitlines()
        if log_lines:
            check += f"; {len(log_lines)} log line(s), last: {log_lines[-1][:300]}"
    finally:
        asyncio.run(bench.server.drop_database(name))
        scratch.set_aside(work)
    run = Run(tool, len(files), sum(f.size for f in files), child.seconds, ok, check,
              peak_rss=child.tree_peak_rss, own_peak_rss=child.peak_rss,
              peak_pss=child.tree_peak_pss,
              cpu_seconds=child.cpu_seconds, descendants_cpu_seconds=child.orphans_cpu_seconds,
              split=split, transactions=xacts, completed=completed)  # fmt: skip
    if first_started is not None and last_downloaded is not None:
        run.busy_seconds = (last_downloaded - first_started).total_seconds()
        run.startup_seconds = first_started.timestamp() - child.started_at
    return run


class Scraper:
    """Prometheus's part: GET /metrics every SCRAPE_INTERVAL from a thread while a run lasts,
    reading the whole body; nothing when `listen` is empty. Refused connections before the
    first success (the daemon still starting) and after the last (run --once has drained and
    closed the endpoint before its process exits) are not failures; one between two is."""

    def __init__(self, listen: str) -> None:
        self._url = f"http://{listen}/metrics" if listen else ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scrape, name="scraper", daemon=True)
        self.scrapes = 0
        self.failed = 0
        self._unanswered = 0  # failures since the last success: counted once another succeeds

    def __enter__(self) -> Scraper:
        if self._url:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._url:
            self._thread.join()

    def _scrape(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL):
            try:
                with urllib.request.urlopen(self._url, timeout=10) as response:
                    response.read()
                self.scrapes += 1
                self.failed += self._unanswered
                self._unanswered = 0
            except OSError:
                if self.scrapes:
                    self._unanswered += 1


# --- aria2c, the seeds' approach, curl ---------------------------------------------------------


def run_aria2(
    bench: Bench, account: measure.CpuAccount, files: Sequence[CorpusFile], base_url: str
) -> Run:
    work = bench.scratch / "aria2c"
    out = work / "out"
    out.mkdir(parents=True)
    inputs = work / "urls.txt"
    inputs.write_text("".join(f"{base_url}/{f.name}\n" for f in files))
    args = [
        bench.programs["aria2c"],
        "--no-conf=true",
        f"--max-concurrent-downloads={bench.connections}",
        f"--input-file={inputs}",
        f"--dir={out}",
        "--quiet=true",
        "--file-allocation=none",
        "--auto-file-renaming=false",
        "--allow-overwrite=true",
        "--summary-interval=0",
        "--max-connection-per-server=1",
        "--split=1",
        "--disable-ipv6=true",
    ]
    os.sync()
    try:
        with account.measure() as split:
            child = measure.run_child(args, cwd=work, stdout=subprocess.DEVNULL)
        right = sum(
            1
            for f in files
            if (out / f.name.rpartition("/")[2]).exists()
            and (out / f.name.rpartition("/")[2]).stat().st_size == f.size
        )
    finally:
        scratch.set_aside(work)
    ok = child.returncode == 0 and right == len(files)
    check = f"exit status {child.returncode}, files with the right size={right}/{len(files)}"
    return Run(f"aria2c -j {bench.connections}", len(files), sum(f.size for f in files),
               child.seconds, ok, check, peak_rss=child.peak_rss, cpu_seconds=child.cpu_seconds,
               split=split)  # fmt: skip


def seeds_fetch(opener: urllib.request.OpenerDirector, url: str, out: Path) -> tuple[str, int]:
    """What the seeds do per file: a blocking GET, the body's MD5, `{md5}.{ext}` written."""
    with opener.open(url, timeout=30) as resp:
        data: bytes = resp.read()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    (out / f"{md5}.jpg").write_bytes(data)
    return md5, len(data)


def run_seeds(
    bench: Bench, account: measure.CpuAccount, files: Sequence[CorpusFile], base_url: str
) -> Run:
    work = bench.scratch / "seeds"
    work.mkdir()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    urls = [f"{base_url}/{f.name}" for f in files]
    os.sync()
    try:
        with (
            account.measure() as split,
            measure.timed() as sw,
            concurrent.futures.ThreadPoolExecutor(max_workers=SEEDS_WORKERS) as pool,
        ):
            futures = [pool.submit(seeds_fetch, opener, url, work) for url in urls]
            results = []
            errors = 0
            for future in concurrent.futures.as_completed(futures):
                try:
                    results.append(future.result())
                except OSError:
                    errors += 1
        wanted = {f.md5: f.size for f in files}
        right = sum(1 for md5, size in results if wanted.get(md5) == size)
        on_disk = sum(1 for _ in work.iterdir())
    finally:
        scratch.set_aside(work)
    ok = errors == 0 and right == len(files) and on_disk == len(files)
    check = f"errors={errors}, md5 and size right={right}/{len(files)}, files written={on_disk}"
    # The seeds run in this process: its CPU is theirs.
    return Run(f"seeds: {SEEDS_WORKERS} threads + urllib", len(files), sum(f.size for f in files),
               sw.elapsed, ok, check, cpu_seconds=split.own, split=split)  # fmt: skip


def run_curl(bench: Bench, account: measure.CpuAccount, big: CorpusFile, base_url: str) -> Run:
    url = f"{base_url}/{big.name}"
    # `curl -s URL | tee >(md5sum >/dev/null) | sha256sum`, with a named pipe in place of the
    # process substitution: the same processes and data flow, but bash waits for md5sum
    # (a process substitution is tee's child, orphaned when tee exits, neither waited for
    # nor counted).
    fifo = bench.scratch / "curl-md5.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    q = shlex.quote
    pipeline = (
        f"set -o pipefail; md5sum < {q(str(fifo))} > /dev/null & "
        f"curl -s {q(url)} | tee {q(str(fifo))} | sha256sum; status=$?; wait $! || status=1;"
        " exit $status"
    )
    out = bench.scratch / "curl.out"
    try:
        with out.open("wb") as handle, account.measure() as split:
            child = measure.run_child([bench.programs["bash"], "-c", pipeline], stdout=handle)
        printed = out.read_text().split()
    finally:
        out.unlink(missing_ok=True)
        fifo.unlink(missing_ok=True)
    right = (printed[0] if printed else "") == big.sha256
    ok = child.returncode == 0 and right
    check = f"exit status {child.returncode}, sha256 {'matches' if right else 'WRONG'}"
    return Run("curl | tee >(md5sum) | sha256sum", 1, big.size, child.seconds, ok, check,
               cpu_seconds=child.cpu_seconds, split=split)  # fmt: skip


# --- the tables --------------------------------------------------------------------------------


def best(done: Sequence[Run], tool_prefix: str) -> Run | None:
    """The tool's median run by seconds (the lower middle of an even count): one noisy round
    on a shared machine moves it less than the best or the mean."""
    chosen = sorted((r for r in done if r.tool.startswith(tool_prefix) and r.ok),
                    key=lambda r: r.seconds)  # fmt: skip
    return chosen[(len(chosen) - 1) // 2] if chosen else None


def latency_label(latency: float) -> str:
    ms = latency * 1000
    return (
        f"CDN-like latency ({ms:g} ms per request, {3 * ms:g} ms for a connection's first:"
        " its TCP and TLS handshakes)"
    )


def summarize(
    verdict: targets.Verdict,
    photo_runs: Sequence[Run],
    big_runs: Sequence[Run],
    bomb_runs: Sequence[Run],
    latency_runs: Sequence[Run],
    repeat: int,
    latency: float,
) -> None:
    """Every table, each judging its targets into `verdict` (see the module docstring)."""
    timing = f"median of {repeat} run(s); seconds from spawn to exit (mediad: start-up included)"
    if photo_runs:
        # With a latency table, the seeds' target is judged there.
        goals = {"aria2c": TARGET_VS_ARIA2, IN_PROCESS: TARGET_VS_IN_PROCESS}
        notes = {}
        if latency_runs:
            notes["seeds"] = f"{TARGET_VS_SEEDS:g}x in the latency table"
        else:
            goals["seeds"] = TARGET_VS_SEEDS
        size = photo_runs[0].bytes / MB
        title = f"Photos: {photo_runs[0].files:,} JPEGs, {size:,.0f} MB; {timing}"
        photo_table(verdict, title, photo_runs, goals, notes)
        http_table(verdict, photo_runs)
        for prefix in (MEDIAD, IN_PROCESS):
            mediad = best(photo_runs, prefix)
            if mediad is not None:
                print(
                    f"{TOOL_LABELS[prefix]}: start-up {mediad.startup_seconds:.2f} s (spawn to"
                    f" first download_started), busy {mediad.busy_seconds:.2f} s (first"
                    f" download_started to last media_downloaded), PostgreSQL CPU"
                    f" {mediad.split.services['PostgreSQL']:.1f} s; {cpu_split(mediad)}."
                )
        print(
            f"{MEDIAD}: decoders in worker processes (the default); {IN_PROCESS}: the same"
            " daemon with media.in_process = true (MEDIAD_MEDIA_IN_PROCESS), the same decode"
            " tasks in its own threads. For mediad, peak RSS and CPU are its whole process"
            " tree's (the decoders' forkserver and workers are its descendants).\nmediad also"
            " probes, fsyncs and records every file; aria2c and the seeds neither fsync nor"
            " probe.\n`others' CPUs`: CPUs busy with processes other than the tool, nginx and"
            " PostgreSQL during the run (a shared machine)."
        )
    if big_runs:
        big_table(verdict, big_runs, repeat)
    if bomb_runs:
        bombs_table(verdict, bomb_runs)
    if latency_runs:
        # The seeds' target is the one this scenario exists for: on loopback their threads
        # never wait. aria2c's is judged here too, as the issue sets it; in-process's stays
        # with loopback (where the decoders' cost shows: nothing waits), shown only here.
        title = f"{latency_label(latency)}: {latency_runs[0].files:,} of the photos; {timing}"
        notes = {IN_PROCESS: f"{TARGET_VS_IN_PROCESS:g}x on loopback"}
        goals = {"seeds": TARGET_VS_SEEDS, "aria2c": TARGET_VS_ARIA2}
        photo_table(verdict, title, latency_runs, goals, notes)
        print(
            "The delay is nginx's (echo_sleep, a timer): no CPU is spent waiting. mediad and"
            " aria2c keep their connections open; the seeds' urllib opens one per file, so every"
            " file pays the handshakes, as it would over https to a real CDN."
        )
    warn_if_noisy(photo_runs, big_runs, latency_runs)


def photo_table(
    verdict: targets.Verdict,
    title: str,
    done: Sequence[Run],
    goals: dict[str, float],
    notes: dict[str, str] | None = None,
) -> None:
    """One table of photo runs (the median run of each tool), mediad's ratio to each, and the
    `goals` judged in it (`notes` in the target column of the tools without one). mediad is the
    default configuration (decoders in workers); its ratio to mediad in-process is the cost of
    the workers. The ratio without start-up compares mediad's rate from its events with the
    other tool's from spawn to exit (with mediad in-process: both from their events)."""
    mediad = best(done, MEDIAD)
    rows: list[list[object]] = []
    for prefix in (MEDIAD, IN_PROCESS, "aria2c", "seeds"):
        run = best(done, prefix)
        goal = goals.get(prefix)
        measure_name = f"mediad / {TOOL_LABELS.get(prefix, prefix)} files/s"
        if run is None:
            if goal is not None:
                verdict.not_measured(measure_name)
            continue
        ratio = report.ratio(mediad.files_per_s, run.files_per_s) if mediad else float("nan")
        theirs = run.busy_files_per_s if prefix == IN_PROCESS else run.files_per_s
        busy_ratio = report.ratio(mediad.busy_files_per_s, theirs) if mediad else ratio
        target_cell, met = (notes or {}).get(prefix, "-"), "-"
        if goal is not None and mediad is None:
            verdict.not_measured(measure_name)
        elif goal is not None:
            target = verdict.judge(targets.Target(measure_name, ratio, goal))
            target_cell, met = target.goal_text, target.met_text
        own = prefix == MEDIAD
        rows.append([run.tool, run.files, run.seconds, run.files_per_s, run.mb_per_s,
                     run.busy_files_per_s, f"{ratio:.2f}x" if not own else "-",
                     target_cell, met, f"{busy_ratio:.2f}x" if not own else "-",
                     run.peak_rss / MB, run.cpu_seconds, run.cpu_ms_per_file,
                     run.others])  # fmt: skip
    report.print_table(
        title,
        ["tool", "files", "seconds", "files/s", "MB/s", "files/s w/o start-up", "mediad / tool",
         "target", "met", "ratio w/o start-up", "peak RSS MB", "CPU s", "CPU ms/file",
         "others' CPUs"],
        rows,
    )  # fmt: skip


def http_table(verdict: targets.Verdict, done: Sequence[Run]) -> None:
    """The HTTP endpoint's cost: the median files/s of the rounds with it on and scraped every
    second against the median of the same daemon's rounds with it off."""
    on = [r.files_per_s for r in done if r.tool.startswith(HTTP_ON) and r.ok]
    off = [r.files_per_s for r in done if r.tool.startswith(MEDIAD) and r.ok]
    measure_name = "mediad http on / off files/s (median)"
    if not any(r.tool.startswith(HTTP_ON) for r in done):
        return  # --skip http
    if not on or not off:
        verdict.not_measured(measure_name)
        return
    ratio = report.ratio(report.median(on), report.median(off))
    target = verdict.judge(targets.Target(measure_name, ratio, TARGET_HTTP_ON))
    report.print_table(
        f"HTTP endpoint on, /metrics scraped every {SCRAPE_INTERVAL:g} s, against off;"
        f" medians of {len(on)} and {len(off)} alternating rounds",
        ["http.listen", "rounds", "files/s each", "median files/s", "on / off", "target", "met"],
        [
            ["off", len(off), " ".join(f"{v:,.0f}" for v in off), report.median(off), "-", "-",
             "-"],
            ["on, scraped", len(on), " ".join(f"{v:,.0f}" for v in on), report.median(on),
             f"{ratio:.2f}x", target.goal_text, target.met_text],
        ],
    )  # fmt: skip


def cpu_split(run: Run) -> str:
    """Where a mediad run's CPU went: the daemon, and its decoder processes."""
    total = run.cpu_ms_per_file
    outlived = run.descendants_cpu_seconds
    if not outlived > 0:
        return f"CPU {total:.2f} ms/file, all in the daemon process"
    decoders = report.rate(outlived * 1000, run.files)
    return (
        f"CPU {total:.2f} ms/file: the daemon {total - decoders:.2f}, its decoders' forkserver"
        f" and workers {decoders:.2f}"
    )


def bombs_table(verdict: targets.Verdict, runs: Sequence[Run]) -> None:
    """The bombs among photos: seconds, the whole tree's peak RSS and the rows completed; the
    RSS and completion targets judged on the default configuration (in-process: shown only)."""
    report.print_table(
        f"Bombs: {BOMBS} PNGs of {BOMB_SIDE}x{BOMB_SIDE} RGBA ({BOMB_SIDE**2 * 4 / MB:,.0f} MB"
        f" each decoded) among {BOMB_PHOTOS} photos, one `mediad run --once` each",
        ["tool", "rows", "completed", "seconds", "peak RSS MB (all processes)", "peak PSS MB",
         "daemon's own peak MB", "CPU s", "decoder processes CPU s", "others' CPUs"],
        [[r.tool, r.files, r.completed if r.completed is not None else "n/a", r.seconds,
          r.peak_rss / MB, r.peak_pss / MB, r.own_peak_rss / MB, r.cpu_seconds,
          r.descendants_cpu_seconds if r.descendants_cpu_seconds > 0 else "-", r.others]
         for r in runs],
    )  # fmt: skip
    workers = next((r for r in runs if r.tool.startswith(MEDIAD)), None)
    if workers is None or workers.completed is None:
        verdict.not_measured("bombs: peak RSS, rows completed")
        return
    judged = [
        verdict.judge(
            targets.Target("bombs: peak RSS of the daemon and its decoders",
                           workers.peak_rss / MB, TARGET_BOMBS_RSS_MB, " MB", below=True)
        ),
        verdict.judge(
            targets.Target("bombs: rows completed", workers.completed, workers.files, " rows")
        ),
    ]  # fmt: skip
    verdict.print_targets("Bombs targets (decoders in workers)", judged)
    if len(runs) > 1:
        print(
            f"{IN_PROCESS}: shown for the contrast only (no decode memory budget: every bomb may"
            " decode at once, in the daemon)."
        )
    print(
        "Peak RSS sums every process's resident pages in one sample (every 10 ms), shared"
        " pages once per process; PSS splits them between their sharers (sampled every 0.5 s)."
    )


def big_table(verdict: targets.Verdict, big_runs: Sequence[Run], repeat: int) -> None:
    """The big file: mediad against the curl pipeline, and mediad's MB/s and peak RSS targets."""
    mediad = best(big_runs, MEDIAD)
    curl = best(big_runs, "curl")
    report.print_table(
        f"Big file: best of {repeat} run(s); mediad's peak RSS and PSS: all its processes"
        " (decoders included)",
        ["tool", "MB", "seconds", "MB/s", "MB/s w/o start-up", "peak RSS MB", "peak PSS MB",
         "daemon's own peak MB", "CPU s", "others' CPUs"],
        [[run.tool, run.bytes / MB, run.seconds, run.mb_per_s, run.busy_mb_per_s,
          run.peak_rss / MB, run.peak_pss / MB, run.own_peak_rss / MB, run.cpu_seconds,
          run.others]
         for run in (mediad, curl) if run is not None],
    )  # fmt: skip
    judged: list[targets.Target] = []
    if mediad is not None and curl is not None:
        ratio = report.ratio(mediad.mb_per_s, curl.mb_per_s)
        speed = targets.Target("MB/s mediad / curl+tee", ratio, TARGET_VS_CURL)
        judged.append(verdict.judge(speed))
    else:
        verdict.not_measured("MB/s mediad / curl+tee")
    if mediad is not None:
        # PSS, not summed RSS: the forkserver and its idle workers share most of their pages
        # (the interpreter, Pillow, PyAV), which summed RSS counts once per process.
        peak = max(r.peak_pss / MB for r in big_runs if r.tool.startswith(MEDIAD))
        rss = targets.Target("mediad peak PSS, all its processes (worst run)", peak,
                             TARGET_RSS_MB, " MB", below=True)  # fmt: skip
        judged.append(verdict.judge(rss))
    else:
        verdict.not_measured("mediad peak RSS")
    if judged:
        verdict.print_targets("Big file targets", judged)


def warn_if_noisy(*scenarios: Sequence[Run]) -> None:
    """Name the best runs during which other processes kept the machine busy."""
    noisy = [
        f"{what}: {r.tool}"
        for what, done, prefixes in zip(
            ("photos", "big file", "CDN-like latency"),
            scenarios,
            (
                (MEDIAD, IN_PROCESS, "aria2c", "seeds"),
                (MEDIAD, "curl"),
                (MEDIAD, IN_PROCESS, "aria2c", "seeds"),
            ),
            strict=True,
        )
        for r in (best(done, p) for p in prefixes)
        if r is not None and r.others > NOISY_CPUS
    ]
    if noisy:
        print(
            f"\nWARNING: other processes kept more than {NOISY_CPUS} CPU busy during the best run"
            f" of: {', '.join(noisy)}. Those figures are pessimistic; rerun on a quiet machine"
            " (or with --repeat 3) before drawing conclusions."
        )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: children stopped, scratch removed", file=sys.stderr)
        sys.exit(130)

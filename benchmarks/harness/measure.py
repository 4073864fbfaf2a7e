"""What a run cost: wall time, a child's peak RSS and CPU, and where the machine's CPU went."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil


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


# --- a child run to its end ---------------------------------------------------------------------


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
    stdin: IO[Any] | int | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    sample_interval: float = 0.01,
    timeout: float | None = None,
) -> ChildRun:
    """Run `args` to completion (killed after `timeout`), timed from spawn to exit, with the
    child's peak RSS.

    A thread samples /proc/PID/status VmHWM (the high-water mark of the exec()ed program, so
    this process's own memory never leaks into it) until the child exits; the child is only
    reaped after the sampler stopped, so its PID cannot be reused under the sampler's feet.
    """
    started_at = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(args), env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
    peak = 0
    exited = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not exited.is_set():
            value = _vm_hwm(proc.pid)
            if value is not None:
                peak = max(peak, value)
            if timeout is not None and time.perf_counter() - t0 > timeout:
                # A hang must not eat the machine's afternoon; the exit status tells.
                proc.kill()
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


# --- where the machine's CPU went ---------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid`, its reaped children and its live children (0 once it is gone)."""
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


def settled_tree_cpu(pid: int) -> float:
    """`tree_cpu(pid)` once two readings agree: to be read after the timed section."""
    # A backend whose client just hung up may be exiting, neither readable nor yet reaped:
    # read again until two readings agree.
    last = tree_cpu(pid)
    for _ in range(40):
        time.sleep(0.025)
        now = tree_cpu(pid)
        if abs(now - last) < 0.002:
            return now
        last = now
    return last


def own_cpu() -> float:
    """CPU seconds of this process (user + system), every thread included."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (not idle, not waiting for I/O) since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class CpuSplit:
    """Where the machine's CPU went during one measurement (seconds)."""

    wall: float = 0.0
    machine: float = 0.0
    # This process: the benchmark itself, or the tool when it runs in-process.
    own: float = 0.0
    # Each server's process tree (PostgreSQL: postmaster and backends), by name.
    services: dict[str, float] = field(default_factory=dict)

    def others(self, tool_cpu: float) -> float:
        """CPUs used, on average, by processes other than the tool and the servers."""
        if self.wall <= 0:
            return float("nan")
        busy = self.machine - tool_cpu - sum(self.services.values())
        return max(0.0, busy) / self.wall


class CpuAccount:
    """Measures the machine's busy CPU, this process's and each named server's, around a run.

    The host may be shared: what neither the tool nor the servers used was other work, and it is
    printed with the figures so a slow one can be told from a busy machine. The `settled`
    servers (PostgreSQL) are read until two readings agree: a backend may be exiting as the run
    ends, and backends that exited inside the window count through the postmaster's
    reaped-children times.
    """

    def __init__(self, services: Mapping[str, int], settled: Mapping[str, int]) -> None:
        self._services = dict(services)
        self._settled = dict(settled)

    @contextlib.contextmanager
    def measure(self) -> Iterator[CpuSplit]:
        split = CpuSplit()
        machine0, own0 = machine_busy(), own_cpu()
        everyone = self._services | self._settled
        services0 = {name: tree_cpu(pid) for name, pid in everyone.items()}
        started = time.perf_counter()
        try:
            yield split
        finally:
            split.wall = time.perf_counter() - started
            split.machine = machine_busy() - machine0
            split.own = own_cpu() - own0
            split.services = {
                name: tree_cpu(pid) - services0[name] for name, pid in self._services.items()
            }
            for name, pid in self._settled.items():
                split.services[name] = settled_tree_cpu(pid) - services0[name]

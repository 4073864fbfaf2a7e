"""What a run cost: wall time, a child's peak RSS and CPU, and where the machine's CPU went."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
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
    # The child's CPU (user + system) and its reaped children's; with `tree`, also that of the
    # descendants it left running when it exited (`orphans_cpu_seconds`).
    cpu_seconds: float
    # With `tree` (else 0): the largest sum of the RSS of the child and all its descendants
    # seen in one sample (see `ProcessTree`), and how many processes the tree ever had.
    tree_peak_rss: int = 0
    tree_processes: int = 0
    # With `tree`: the largest sum of the members' PSS (shared pages split between their
    # sharers), sampled every `TREE_PSS_INTERVAL` only.
    tree_peak_pss: int = 0
    # With `tree`: the CPU of the descendants that outlived the child (an exited parent's
    # children are reparented, so its own rusage never gets their times), every descendant
    # they reaped included; part of `cpu_seconds`. Reaped here as a child subreaper.
    orphans_cpu_seconds: float = 0.0


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


# prctl(2) option: orphaned descendants are reparented to this process instead of init.
_PR_SET_CHILD_SUBREAPER = 36
# The whole of /proc is read this often to find the tree's members (1 ms of CPU a read with ~100
# processes: every 10 ms would cost a tenth of a CPU); their RSS is read every sample.
TREE_RESCAN_INTERVAL = 0.1
# The tree's PSS is read this often: /proc/PID/smaps_rollup walks the page tables (6 ms for a
# 600 MB process).
TREE_PSS_INTERVAL = 0.5
# After the child exits, how long its orphaned descendants get to exit on their own (they are
# then killed: they are the run's own processes).
ORPHANS_GRACE = 10.0


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat after the command's closing parenthesis: [0] is field 3 (state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()
    except OSError:
        return None


class ProcessTree:
    """The peak RSS of a process and all its descendants (workers of a forkserver, say), and
    what is needed to reap the descendants it leaves behind.

    There is no high-water mark of a tree: a sample sums each member's current RSS
    (/proc/PID/statm, 20 us a read) and the peak is the largest sum, exact but for growth
    shorter than the sampling interval. Members are found by reading every /proc/PID/stat's
    parent pid every `TREE_RESCAN_INTERVAL` (this kernel has no /proc/PID/task/TID/children),
    so a descendant is counted from at most that long after it starts. Pages shared between
    members (a forked worker's copy-on-write pages, shared libraries) count once per member, as
    `ps` and `top` count them: the sum can only overstate what the tree holds. The sum of the
    members' PSS does not (each shared page is split between its sharers), but reading it
    costs 6 ms for a 600 MB process, so it is sampled every `TREE_PSS_INTERVAL` only, and its
    peak may miss a short-lived one.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        # pid -> its start time (clock ticks after boot): a pid reused by a stranger is not ours.
        self.members: dict[int, int] = {}
        self.ever: dict[int, int] = {}
        self.peak = 0
        self.peak_pss = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._scanned = -math.inf
        self._pss_read = -math.inf

    def sample(self) -> None:
        now = time.perf_counter()
        if now - self._scanned >= TREE_RESCAN_INTERVAL:
            self._scanned = now
            self._rescan()
        total = 0
        for pid in self.members:
            try:
                with open(f"/proc/{pid}/statm", "rb") as handle:
                    total += int(handle.read().split()[1]) * self._page
            except (OSError, ValueError, IndexError):
                continue  # it exited since the last scan
        self.peak = max(self.peak, total)
        if now - self._pss_read >= TREE_PSS_INTERVAL:
            self._pss_read = now
            self.peak_pss = max(self.peak_pss, sum(_pss(pid) for pid in self.members))

    def _rescan(self) -> None:
        parents: dict[int, list[tuple[int, int]]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _stat_fields(int(entry))
            if fields is None or len(fields) < 20:
                continue
            parents.setdefault(int(fields[1]), []).append((int(entry), int(fields[19])))
        found = {self.root: 0}
        todo = [self.root]
        while todo:
            for pid, started in parents.get(todo.pop(), []):
                if pid not in found:
                    found[pid] = started
                    todo.append(pid)
        self.members = found
        self.ever.update(found)

    def reap_orphans(self, grace: float = ORPHANS_GRACE) -> float:
        """Wait for the descendants the root left behind (reparented to this process, a child
        subreaper), killing those still running after `grace` seconds; their CPU seconds,
        the descendants they reaped included."""
        waiting = {pid: started for pid, started in self.ever.items() if pid != self.root}
        cpu = 0.0
        deadline = time.perf_counter() + grace
        killed = False
        while waiting:
            for pid, started in list(waiting.items()):
                fields = _stat_fields(pid)
                if fields is None or int(fields[19]) != started:
                    del waiting[pid]  # gone, reaped by its own parent (its CPU is theirs)
                    continue
                try:
                    reaped, _, usage = os.wait4(pid, os.WNOHANG)
                except ChildProcessError:
                    continue  # its parent, a member, is still running
                if reaped:
                    cpu += usage.ru_utime + usage.ru_stime
                    del waiting[pid]
            if waiting and not killed and time.perf_counter() > deadline:
                killed = True
                for pid in waiting:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            if waiting:
                time.sleep(0.01)
        return cpu


def _pss(pid: int) -> int:
    """The proportional set size of `pid` in bytes (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0


def _set_child_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


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
    tree: bool = False,
) -> ChildRun:
    """Run `args` to completion (killed after `timeout`), timed from spawn to exit, with the
    child's peak RSS; with `tree`, also the peak RSS and the CPU of all its descendants.

    A thread samples /proc/PID/status VmHWM (the high-water mark of the exec()ed program, so
    this process's own memory never leaks into it) until the child exits; the child is only
    reaped after the sampler stopped, so its PID cannot be reused under the sampler's feet.
    With `tree`, the same thread samples the tree (`ProcessTree`), and this process is a child
    subreaper until the descendants left running when the child exits have exited and been
    reaped here, their CPU added to the child's (wall time stops when the child exits).
    """
    started_at = time.time()
    if tree:
        _set_child_subreaper(True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            list(args), env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr
        )
    except BaseException:
        if tree:
            _set_child_subreaper(False)
        raise
    members = ProcessTree(proc.pid) if tree else None
    peak = 0
    exited = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not exited.is_set():
            value = _vm_hwm(proc.pid)
            if value is not None:
                peak = max(peak, value)
            if members is not None:
                members.sample()
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
        orphans_cpu = members.reap_orphans() if members is not None else 0.0
    except BaseException:
        exited.set()
        proc.kill()
        proc.wait()
        if members is not None:
            members.reap_orphans(grace=0)
        raise
    finally:
        if tree:
            _set_child_subreaper(False)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        returncode=proc.returncode,
        seconds=seconds,
        started_at=started_at,
        peak_rss=peak,
        ru_maxrss=usage.ru_maxrss * 1024,  # kilobytes on Linux
        cpu_seconds=usage.ru_utime + usage.ru_stime + orphans_cpu,
        tree_peak_rss=members.peak if members is not None else 0,
        tree_processes=len(members.ever) if members is not None else 0,
        tree_peak_pss=members.peak_pss if members is not None else 0,
        orphans_cpu_seconds=orphans_cpu,
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

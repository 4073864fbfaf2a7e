"""Several worker processes on one host (`daemon.processes` above 1), under one parent.

Each worker is a spawned process (never forked from this threaded one) running the daemon's
single-process machinery (daemon.serve: its own event loop, stage pools, decoders, HTTP
session, LISTEN connection) with its share of every host-wide limit (mediad/shares.py). The
parent holds what must be one per host:

- the embedded PostgreSQL (started before the workers, by daemon.run), the migration and the
  sweep of rows left waiting for disabled stages;
- per_host_concurrency and the host circuit breaker (net/hostgate.GateServer, a unix socket),
  and beside its socket the file the workers lock in turn to run a decode over their share of
  media.decode_memory (media/decoders.py), so that only one such runs on the host at once;
- the eviction loop;
- signals: SIGTERM or SIGINT is passed to every worker as SIGTERM, and each drains within
  daemon.shutdown_grace (a worker not gone some seconds after that is killed); a second signal
  is passed on too, which stops the workers at once;
- systemd: READY=1 once every worker is up, WATCHDOG=1 only while every worker is alive and
  reports in with no stuck pool, STATUS= summed over the workers;
- run --once: it starts no more workers than the rows due at its start keep busy (one file is
  one worker's work), and ends when every worker has gone idle and the database holds nothing
  due for any stage and nothing leased to any of this host's workers, living or dead;
- a worker that died (a crash, the OOM killer, SIGKILL) is started again, after 1 s doubling up
  to a minute while it keeps dying young; the rows it held return to the queue through their
  leases, as a dead host's do. Under run --once, a worker dying young ONCE_DEATHS times in a
  row ends the run with exit status 1 instead: it would never drain. A worker that stops on a
  configuration error (http.listen's port taken) is not started again: the daemon stops with
  that error, as a single process does.

The HTTP endpoint (http.listen) is served by worker 0. Every worker's counters reach it
through prometheus_client's multiprocess mode: the parent sets PROMETHEUS_MULTIPROC_DIR to an
empty directory of its own before the first worker starts (spawned workers inherit the
environment), each worker's counters are written to mmap'd files there, and the endpoint serves
them summed (mediad/http/collectors.py). Only counters and histograms are kept that way, so a
dead worker's counts stay in the totals, as they should. /healthz sees worker 0's pools only;
the parent's watchdog sees them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from mediad import daemon, errors, shares, stages, systemd
from mediad import log as logsetup
from mediad.config import Config
from mediad.daemon import StageCounts
from mediad.db import DB_ERRORS
from mediad.net.hostgate import GateServer
from mediad.queue import StageQueue
from mediad.resources import Resources
from mediad.stage import Declaration, Row, Stage

log = structlog.get_logger(__name__)

# How often a worker reports in; the parent calls a worker silent for REPORT_STALE seconds dead
# to the watchdog (a wedged event loop sends nothing).
REPORT_INTERVAL = 1.0
REPORT_STALE = 15.0
# A worker that dies is started again after RESTART_DELAY, doubling while it keeps dying
# within RESTART_RESET of its start, up to RESTART_MAX.
RESTART_DELAY = 1.0
RESTART_MAX = 60.0
RESTART_RESET = 60.0
# run --once gives up on a worker dying young this many times in a row (after 1+2+4+8 s).
ONCE_DEATHS = 5
# After shutdown_grace, what a worker may still take to write its outcomes and exit.
EXIT_MARGIN = 15.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (pickled by multiprocessing's spawn)."""

    index: int
    config: Config
    url: str
    stages: tuple[str, ...]
    gate: str
    # The file the workers lock in turn for an oversized decode (see DecoderPool).
    decode_lock: str
    once: bool


@dataclass
class _Worker:
    """One worker slot: the process in it now, and what it last said."""

    spec: WorkerSpec
    process: BaseProcess | None = None
    link: Connection | None = None
    started_at: float = 0.0
    ready: bool = False
    idle: bool = False
    last_report: float = 0.0
    counts: list[StageCounts] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    deaths: int = 0
    # The configuration error the worker stopped on (a port taken, a bad key): starting it
    # again would only fail again.
    refused: str | None = None


async def run(config: Config, url: str, *, once: bool, stop: asyncio.Event) -> None:
    """The parent: start the workers, keep them alive, stop them (see the module docstring)."""
    registry = stages.ALL
    disabled = stages.disabled(config, registry)
    enabled = [d.name for d in registry if d.name not in disabled]
    count = shares.useful_processes(config, enabled)
    owner = daemon.worker_name(config)
    async with contextlib.AsyncExitStack() as stack:
        resources = await stack.enter_async_context(Resources.open(config, url, owner, 2))
        await daemon.skip_waiting(resources, registry)
        if once:
            count = await _kept_busy(resources, config, enabled, count)
        gate_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="mediad-gate-"))
        gate = os.path.join(gate_dir, "hosts.sock")
        decode_lock = os.path.join(gate_dir, "oversized-decodes.lock")
        download = config.download
        gate_server = GateServer(download.per_host_concurrency, concurrency=download.concurrency)
        await stack.enter_async_context(gate_server.serving(gate))
        await stack.enter_async_context(daemon.evictor(resources))
        if config.http.listen is not None:
            stack.enter_context(_metrics_shared())
        specs = []
        for index in range(count):
            part = shares.for_process(config, index, count)
            running = tuple(n for n in enabled if shares.stage_concurrency(part, n) > 0)
            specs.append(WorkerSpec(index, part, url, running, gate, decode_lock, once))
        parent = _Parent(config, specs, resources, once, stop)
        stack.enter_context(daemon.signals(stop, (signal.SIGTERM, signal.SIGINT)))
        await parent.run()


class _Parent:
    def __init__(
        self,
        config: Config,
        specs: list[WorkerSpec],
        resources: Resources,
        once: bool,
        stop: asyncio.Event,
    ) -> None:
        self._config = config
        self._workers = [_Worker(spec) for spec in specs]
        self._resources = resources
        self._once = once
        self._stop = stop
        # Every lease owner any worker of this run had: a dead one's rows count as held until
        # their leases lapse.
        self._owners: list[str] = []
        self._announced_ready = False
        self._context = multiprocessing.get_context("spawn")
        self._check_drained = asyncio.Event()
        # Why run --once gave up on its workers (None: it did not).
        self._gave_up: str | None = None
        # The configuration error a worker stopped on: the daemon stops with it, as a single
        # process does.
        self._refused: str | None = None

    async def run(self) -> None:
        log.info("supervisor_started", processes=len(self._workers), once=self._once,
                 stages={w.spec.index: list(w.spec.stages) for w in self._workers})  # fmt: skip
        keepers = [asyncio.create_task(self._keep(w), name=f"keep-{w.spec.index}")
                   for w in self._workers]  # fmt: skip
        helpers = [asyncio.create_task(self._watchdog(), name="watchdog")]
        if self._once:
            helpers.append(asyncio.create_task(self._end_when_drained(), name="once"))
        try:
            await self._stop.wait()
            systemd.notify("STOPPING=1\nSTATUS=stopping: workers finish in-flight work")
            self._signal_all(signal.SIGTERM)
            grace = self._config.daemon.shutdown_grace + EXIT_MARGIN
            _, late = await asyncio.wait(keepers, timeout=grace)
            if late:
                log.error("workers_killed", workers=len(late), after=grace)
                self._signal_all(signal.SIGKILL)
                await asyncio.gather(*late, return_exceptions=True)
        except asyncio.CancelledError:
            # A second signal: pass it on (a worker then stops at once), and do not wait long.
            self._signal_all(signal.SIGTERM)
            _, late = await asyncio.wait(keepers, timeout=5.0)
            self._signal_all(signal.SIGKILL)
            raise
        finally:
            for task in [*helpers, *keepers]:
                task.cancel()
            await asyncio.gather(*helpers, *keepers, return_exceptions=True)
            for worker in self._workers:
                self._reap(worker)
            log.info("supervisor_stopped", processes=len(self._workers))
        if self._refused is not None:
            raise errors.ConfigError(self._refused)
        if self._gave_up is not None:
            raise errors.MediadError(self._gave_up)

    # --- one worker slot ---------------------------------------------------------------------

    async def _keep(self, worker: _Worker) -> None:
        """Run the slot's worker until stop; start it again, with backoff, when it dies."""
        while not self._stop.is_set():
            self._start(worker)
            exitcode = await self._exited(worker)
            if self._stop.is_set():
                return
            if worker.refused is not None:
                log.error("worker_refused_config", process=worker.spec.index,
                          error=worker.refused)  # fmt: skip
                self._refused = worker.refused
                self._stop.set()
                return
            lived = time.monotonic() - worker.started_at
            worker.deaths = 0 if lived >= RESTART_RESET else worker.deaths + 1
            delay = min(RESTART_DELAY * 2 ** max(worker.deaths - 1, 0), RESTART_MAX)
            if self._once and worker.deaths >= ONCE_DEATHS:
                self._gave_up = (
                    f"run --once: worker process {worker.spec.index} died {worker.deaths} times"
                    f" in a row, each within {RESTART_RESET:.0f} s of its start (last exit code"
                    f" {exitcode}); see the log lines before this one"
                )
                log.error("workers_failing", process=worker.spec.index, exitcode=exitcode,
                          deaths=worker.deaths)  # fmt: skip
                self._stop.set()
                return
            log.error("worker_died", process=worker.spec.index, exitcode=exitcode,
                      lived=round(lived, 1), restart_in=delay)  # fmt: skip
            self._check_drained.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    def _start(self, worker: _Worker) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main,
            args=(worker.spec, child_end),
            name=f"mediad-worker-{worker.spec.index}",
        )
        with _sigint_ignored():
            # Inherited as ignored through exec, so Ctrl-C on a terminal (sent to the whole
            # process group) reaches only the parent, which passes it on as one SIGTERM.
            process.start()
        child_end.close()
        worker.process, worker.link = process, parent_end
        worker.started_at = worker.last_report = time.monotonic()
        worker.ready = worker.idle = False
        asyncio.get_running_loop().add_reader(parent_end.fileno(), self._on_message, worker)

    async def _exited(self, worker: _Worker) -> int | None:
        assert worker.process is not None
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        sentinel = worker.process.sentinel
        loop.add_reader(sentinel, _resolve, gone)
        try:
            await gone
        finally:
            loop.remove_reader(sentinel)
        return self._reap(worker)

    def _reap(self, worker: _Worker) -> int | None:
        process, link = worker.process, worker.link
        if link is not None:
            asyncio.get_running_loop().remove_reader(link.fileno())
            # What it said just before it went (why it stopped) may not have been read yet.
            with contextlib.suppress(EOFError, OSError):
                while link.poll():
                    self._heard(worker, link.recv())
            link.close()
            worker.link = None
        if process is None:
            return None
        process.join(timeout=0)
        exitcode = process.exitcode
        if exitcode is not None:
            process.close()
            worker.process = None
        worker.ready = False
        return exitcode

    def _on_message(self, worker: _Worker) -> None:
        link = worker.link
        if link is None:
            return
        try:
            message = link.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(link.fileno())
            return
        self._heard(worker, message)

    def _heard(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        worker.last_report = time.monotonic()
        if kind == "ready":
            worker.ready = True
            self._owners.append(message[1])
            if not self._announced_ready and all(w.ready for w in self._workers):
                self._announced_ready = True
                log.info("workers_ready", processes=len(self._workers))
                systemd.notify("READY=1\nSTATUS=running")
        elif kind == "alive":
            worker.counts = [StageCounts(*c) for c in message[1]]
            worker.stuck = message[2]
        elif kind == "idle":
            worker.idle = True
            self._check_drained.set()
        elif kind == "refused":
            worker.refused = message[1]

    def _signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signum)  # type: ignore[arg-type]

    # --- the host's view ---------------------------------------------------------------------

    async def _watchdog(self) -> None:
        interval = systemd.watchdog_interval() or 10.0
        while True:
            if self._all_alive():
                systemd.notify("WATCHDOG=1")
            systemd.notify("STATUS=" + self.status())
            if self._once:
                self._check_drained.set()  # a dead worker's leases lapse without a word
            await asyncio.sleep(interval)

    def _all_alive(self) -> bool:
        now = time.monotonic()
        for worker in self._workers:
            process = worker.process
            if process is None or process.exitcode is not None or not worker.ready:
                return False
            if worker.stuck or now - worker.last_report > REPORT_STALE:
                return False
        return True

    def status(self) -> str:
        """STATUS=: the workers' counts summed per stage."""
        summed: dict[str, StageCounts] = {}
        for worker in self._workers:
            for counts in worker.counts:
                known = summed.get(counts.stage)
                summed[counts.stage] = counts if known is None else known + counts
        up = sum(1 for w in self._workers if w.ready)
        return f"{up}/{len(self._workers)} processes; " + daemon.status_line(list(summed.values()))

    async def _end_when_drained(self) -> None:
        """run --once: stop once every worker is idle and nothing is due or held by ours."""
        queues = [_queue(self._resources, d) for d in stages.ALL
                  if d.name in {n for w in self._workers for n in w.spec.stages}]  # fmt: skip
        while not self._stop.is_set():
            await self._check_drained.wait()
            self._check_drained.clear()
            if not all(w.ready and w.idle for w in self._workers):
                continue
            try:
                left = 0
                for queue in queues:
                    left += await queue.count_due() + await queue.count_held(self._owners)
            except DB_ERRORS as exc:
                log.warning("count_due_failed", error=str(exc))
                continue
            # A worker busy since it said idle holds leases, so the count is the judge; the
            # next idle (or the watchdog's tick) asks again.
            if left == 0:
                log.info("queue_drained")
                self._stop.set()
                return


async def _kept_busy(resources: Resources, config: Config, enabled: list[str], count: int) -> int:
    """run --once: no more of the `count` workers than the rows due now keep busy, each with
    its share of a stage's concurrency. A second worker for a backlog of one file would start,
    import everything, and idle until the end (30 MB and a second of CPU); the rows the first
    ones make due for the next stages are theirs to take."""
    needed = 1
    for declaration in stages.ALL:
        if declaration.name in enabled:
            due = await _queue(resources, declaration).count_due()
            share = max(1, shares.stage_concurrency(config, declaration.name) // count)
            needed = max(needed, math.ceil(due / share))
    if needed < count:
        log.info("workers_for_backlog", processes=needed, configured=count)
    return min(count, needed)


def _queue(resources: Resources, declaration: Declaration) -> StageQueue:
    """A stage's queue, for counting only: the parent processes no row."""

    async def never(row: Row) -> Any:
        raise AssertionError("the parent processes no row")

    stage = Stage.configured(declaration, never, resources.config)
    return StageQueue(resources.pool, stage, resources.owner, resources.config.daemon.lease)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --- in the worker process -----------------------------------------------------------------------


def worker_main(spec: WorkerSpec, link: Connection) -> None:
    """A worker process's entry point: the daemon's stages until SIGTERM or the parent's end."""
    # systemd hears the parent only.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)
    logsetup.configure(spec.config.log.format, spec.config.log.level)
    try:
        asyncio.run(_work(spec, link))
    except asyncio.CancelledError:
        sys.exit(1)  # a second signal: stopped without draining
    except errors.ConfigError as exc:
        # The parent stops the daemon with it rather than starting this worker again.
        with contextlib.suppress(OSError):
            link.send(("refused", str(exc)))
        sys.exit(1)
    except Exception:
        log.exception("worker_crashed", process=spec.index)
        sys.exit(1)


async def _work(spec: WorkerSpec, link: Connection) -> None:
    structlog.contextvars.bind_contextvars(process=spec.index)
    stop = asyncio.Event()
    herald = _ParentHerald(link, stop)
    config = spec.config
    owner = daemon.worker_name(config)
    openers = {name: stages.opener(stages.named(name)) for name in spec.stages}
    size = daemon.pool_size(config)
    async with Resources.open(
        config, spec.url, owner, size, host_gate=spec.gate, decode_lock=spec.decode_lock
    ) as resources:
        duties = daemon.Duties(
            herald, drains_alone=False, signals=(signal.SIGTERM,), serves_http=spec.index == 0
        )
        await daemon.serve(resources, stages.ALL, openers, stop, spec.once, duties)


class _ParentHerald:
    """A worker tells its parent (daemon.Herald); the link's end means the parent is gone."""

    interval = REPORT_INTERVAL

    def __init__(self, link: Connection, stop: asyncio.Event) -> None:
        self._link = link
        self._stop = stop
        asyncio.get_running_loop().add_reader(link.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            self._link.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._link.fileno())
            if not self._stop.is_set():
                log.error("parent_gone")
                self._stop.set()

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._link.send(message)
        except OSError:
            self._stop.set()

    def ready(self, owner: str) -> None:
        self._send(("ready", owner))

    def alive(self, counts: list[StageCounts], stuck: list[str]) -> None:
        rows = [(c.stage, c.in_flight, c.completed, c.retried, c.failed, c.paused) for c in counts]
        self._send(("alive", rows, stuck))

    def idle(self) -> None:
        self._send(("idle",))

    def stopping(self) -> None:
        pass


@contextlib.contextmanager
def _metrics_shared() -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the workers about to start, unless the operator set one."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="mediad-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]

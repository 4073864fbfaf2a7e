"""`mediad run`: opens the resources once, runs one pool per stage, and stops cleanly.

Stop is asked by SIGTERM/SIGINT (the handler only sets an event) or, with --once, when no
stage has anything due. In-flight work then gets `daemon.shutdown_grace` to finish; what does
not finish is handed back so another host can take it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import structlog

from mediad import counts, db, errors, health, migrate, progress_log, queries, stages, systemd
from mediad.config import Config
from mediad.db import DB_ERRORS
from mediad.http import access
from mediad.queries import Registry
from mediad.queue import StageQueue
from mediad.resources import Resources
from mediad.retry import Backoff
from mediad.stage import Opener, Stage

if TYPE_CHECKING:
    from mediad.pool import StagePool

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "mediad"
# Rows a disabled stage marks skipped per statement, when it sweeps the rows left waiting.
_SKIP_BATCH = 1000


def worker_name(config: Config) -> str:
    """This process's name in leases and events: unique even if a pid is reused."""
    base = config.daemon.worker_name or socket.gethostname()
    return f"{base}:{os.getpid()}:{secrets.token_hex(2)}"


async def run(
    config: Config,
    *,
    once: bool = False,
    url: str | None = None,
    registry: Registry = stages.ALL,
    openers: Mapping[str, Opener] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the daemon until stopped (or drained, with `once`): every enabled stage of `registry`,
    or only those `openers` names, each opened by the opener given. With daemon.processes above
    1, this process becomes the parent of that many workers (mediad/supervisor.py)."""
    if url is None:
        url = await asyncio.to_thread(db.database_url, config)
    stop = stop or asyncio.Event()
    if config.http.listen is not None:
        # Before anything starts: a listen address that would expose the endpoint unprotected.
        access.check_access(config.http)
    await migrate.migrate_url(url, registry)
    if config.daemon.process_count > 1:
        if openers is not None or registry is not stages.ALL:
            # A worker process opens its stages by their declared implementation.
            raise ValueError("several processes run only the declared stages")
        from mediad import supervisor

        await supervisor.run(config, url, once=once, stop=stop)
        return
    owner = worker_name(config)
    async with Resources.open(config, url, owner, pool_size(config, registry)) as resources:
        await skip_waiting(resources, registry)
        async with evictor(resources):
            await serve(resources, registry, openers, stop, once, Duties(SystemdHerald()))


def http_endpoint() -> ModuleType:
    """mediad/http/server.py, imported only where http.listen is set: aiohttp's server and the
    collectors (about 0.1 s of every start, which `run --once` pays; Jinja2 waits for a page)."""
    from mediad.http import server

    return server


def pool_size(config: Config, registry: Registry = stages.ALL) -> int:
    """Database connections for a process running the enabled stages of `registry`."""
    return 4 + 2 * (len(registry) - len(stages.disabled(config, registry)))


@dataclass(frozen=True)
class Duties:
    """What a process does beside its stage pools. A process alone does it all; a worker of
    mediad/supervisor.py tells its parent instead of systemd, leaves --once's end to it, and
    answers SIGTERM only (Ctrl-C reaches the parent, which passes it on as SIGTERM)."""

    herald: Herald
    # run --once: stop by itself once its own queues are drained (else the parent decides).
    drains_alone: bool = True
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    # http.listen: one process of a host serves it (a worker's counters reach it through
    # prometheus_client's multiprocess files).
    serves_http: bool = True


async def serve(
    resources: Resources,
    registry: Registry,
    openers: Mapping[str, Opener] | None,
    stop: asyncio.Event,
    once: bool,
    duties: Duties,
) -> None:
    """Run one pool per stage of `openers` (default: every enabled stage) until stopped."""
    config, owner = resources.config, resources.owner
    disabled = stages.disabled(config, registry)
    if openers is None:
        openers = {d.name: stages.opener(d) for d in registry if d.name not in disabled}
    running = [stages.named(name, registry) for name in openers]
    pools = []
    async with contextlib.AsyncExitStack() as stack:
        for declaration in running:
            stage = await stack.enter_async_context(openers[declaration.name](resources))
            queue = StageQueue(
                resources.pool,
                stage,
                owner,
                config.daemon.lease,
                registry=registry,
                disabled=disabled,
            )
            pools.append(_pool(config, stage, queue))
        if duties.serves_http and config.http.listen is not None:
            await stack.enter_async_context(
                http_endpoint().serving(resources, resources.url, registry, pools)
            )
        await stack.enter_async_context(counts.folding(resources.pool))
        stack.enter_context(signals(stop, duties.signals))
        await _supervise(config, resources.url, owner, pools, stop, once, duties)


def _pool(config: Config, stage: Stage, queue: StageQueue) -> StagePool:
    # Imported by the processes that run stages: the parent of several workers imports this
    # module for its shared duties, and the pool brings the metrics (prometheus_client, 2 MB).
    from mediad.pool import StagePool

    return StagePool(
        stage,
        queue,
        backoff=Backoff(config.daemon.backoff_base, config.daemon.backoff_max),
        claim_batch=config.daemon.claim_batch,
        poll_interval=config.daemon.poll_interval,
    )


async def skip_waiting(resources: Resources, registry: Registry) -> None:
    """A disabled stage's rows left waiting from before it was disabled are marked skipped (the
    completions that open a disabled stage skip the rows that come later)."""
    disabled = stages.disabled(resources.config, registry)
    for declaration in registry:
        if declaration.name not in disabled:
            continue
        sql = queries.for_stage(declaration, tuple(registry), disabled)["skip_waiting"]
        skipped = 0
        while batch := await resources.pool.fetch(sql, _SKIP_BATCH, declaration.disabled_reason):
            skipped += len(batch)
        if skipped:
            log.info("rows_skipped", stage=declaration.name, rows=skipped,
                     reason=declaration.disabled_reason)  # fmt: skip


@contextlib.asynccontextmanager
async def evictor(resources: Resources) -> AsyncIterator[None]:
    """With storage.max_cache_size set, the daemon evicts archived files by itself."""
    limit = resources.config.storage.max_cache_size
    if limit is None or not resources.config.archive.enabled:
        yield
        return
    # Imported only when evicting: it brings the S3 client's libraries.
    from mediad.commands import evict

    async with evict.in_daemon(resources, limit):
        yield


async def _supervise(
    config: Config,
    url: str,
    owner: str,
    pools: list[StagePool],
    stop: asyncio.Event,
    once: bool,
    duties: Duties,
) -> None:
    by_name = {p.stage.name: p for p in pools}
    listener = Listener(url, by_name, config.daemon.poll_interval)
    herald = duties.herald
    helpers = [
        asyncio.create_task(listener.run(stop), name="listener"),
        asyncio.create_task(_watchdog(pools, config, herald), name="watchdog"),
        asyncio.create_task(_announce_stop(stop, herald), name="announce-stop"),
        asyncio.create_task(
            progress_log.log_forever(pools, config.log.progress_interval), name="progress"
        ),
    ]
    if once and duties.drains_alone:
        helpers.append(asyncio.create_task(_stop_when_drained(pools, stop), name="once"))
    elif once:
        helpers.append(asyncio.create_task(_tell_when_idle(pools, herald), name="once"))
    runners = [
        asyncio.create_task(p.run(stop, config.daemon.shutdown_grace), name=f"pool-{p.stage.name}")
        for p in pools
    ]
    log.info("daemon_started", worker=owner, stages=list(by_name), once=once)
    herald.ready(owner)
    try:
        if not runners:
            log.warning("no_stages_enabled")
            await stop.wait()
        # A pool only returns once stop was asked; if one dies, that is a bug: stop the rest.
        done, _ = (
            await asyncio.wait(runners, return_when=asyncio.FIRST_EXCEPTION)
            if runners
            else (set(), set())
        )
        for task in done:
            if task.exception() is not None:
                stop.set()
                await asyncio.gather(*runners, return_exceptions=True)
                raise task.exception()  # type: ignore[misc]
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        log.info("daemon_stopped", **{p.stage.name: vars(p.stats) for p in pools})


async def _announce_stop(stop: asyncio.Event, herald: Herald) -> None:
    await stop.wait()
    herald.stopping()


@contextlib.contextmanager
def signals(
    stop: asyncio.Event, signums: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
) -> Any:
    """The first of `signums` asks `stop`; a second cancels the running task (stop now)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # A second signal means "now": in-flight leases simply lapse.
            log.warning("stopping_now", signal=signal.Signals(signum).name)
            if main is not None:
                main.cancel()
            return
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    installed = []
    for signum in signums:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


class Listener:
    """LISTENs for the notify trigger and wakes the named pool; reconnects when the link drops."""

    def __init__(self, url: str, pools: dict[str, StagePool], keepalive: float) -> None:
        self._url = url
        self._pools = pools
        self._keepalive = keepalive
        self.connected = asyncio.Event()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        pool = self._pools.get(str(payload))
        if pool is not None:
            pool.wake()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        first = True
        while not stop.is_set():
            try:
                async with self._connection() as lost:
                    if not first:
                        log.warning("listen_reconnected")
                        # Notifications sent while we were away are gone: look now.
                        for pool in self._pools.values():
                            pool.wake()
                    first, delay = False, 0.5
                    await _first_of(lost.wait(), stop.wait())
                    if lost.is_set() and not stop.is_set():
                        log.warning("listen_connection_lost")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("listen_failed", error=str(exc), retry_in=delay)
            except errors.DatabaseError as exc:
                log.warning("listen_failed", error=str(exc), retry_in=delay)
            self.connected.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 30.0)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncio.Event]:
        conn = await db.connect(self._url)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        keepalive = asyncio.create_task(self._ping(conn, lost))
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            self.connected.set()
            yield lost
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            if lost.is_set():
                conn.terminate()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=5)

    async def _ping(self, conn: asyncpg.Connection[Any], lost: asyncio.Event) -> None:
        # A half-open TCP link never reports itself: ask the server now and then.
        while not lost.is_set():
            await asyncio.sleep(self._keepalive)
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=10)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                lost.set()


async def _first_of(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _stop_when_drained(pools: list[StagePool], stop: asyncio.Event) -> None:
    """For --once: stop when every pool is idle and the database agrees nothing is due."""
    while not stop.is_set():
        for pool in pools:
            await pool.idle.wait()
        working = [p for p in pools if not p.paused]
        try:
            due = sum([await p.queue.count_due() for p in working])
        except DB_ERRORS as exc:
            # The database is away (a restart): ask again once it answers; never stop on it.
            log.warning("count_due_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            continue
        if due == 0 and all(p.idle.is_set() for p in pools):
            log.info("queue_drained")
            stop.set()
            return
        # Rows became due behind an idle pool's back (a stage finished a row for the next):
        # make every pool look again, and wait for each to have looked.
        for pool in working:
            pool.looked.clear()
            pool.wake()
        for pool in working:
            await pool.looked.wait()


async def _tell_when_idle(pools: list[StagePool], herald: Herald) -> None:
    """run --once under a parent: say each time every pool has gone idle. The parent ends the
    run when all its workers are idle and the database holds nothing due or leased to them."""
    while True:
        for pool in pools:
            await pool.idle.wait()
        herald.idle()
        # Wait for a pool to take work again (every pass of a loop sets `looked`).
        while all(p.idle.is_set() for p in pools):
            for pool in pools:
                pool.looked.clear()
            await _first_of(*(p.looked.wait() for p in pools))
        if not pools:
            return


async def _watchdog(pools: list[StagePool], config: Config, herald: Herald) -> None:
    """Tells the herald, every `herald.interval`, which pools are stuck and what each did."""
    while True:
        stuck = health.stuck_stages(pools, config.daemon)
        if stuck:
            log.error("pool_stuck", stages=stuck)
        herald.alive([StageCounts.of(p) for p in pools], stuck)
        await asyncio.sleep(herald.interval)


@dataclass(frozen=True)
class StageCounts:
    """One stage's pool as `systemctl status` shows it; a parent sums its workers'."""

    stage: str
    in_flight: int
    completed: int
    retried: int
    failed: int
    paused: bool

    @classmethod
    def of(cls, pool: StagePool) -> StageCounts:
        stats = pool.stats
        return cls(
            pool.stage.name, pool.in_flight, stats.completed, stats.retried, stats.failed,
            pool.paused,
        )  # fmt: skip

    def __add__(self, other: StageCounts) -> StageCounts:
        return StageCounts(
            self.stage,
            self.in_flight + other.in_flight,
            self.completed + other.completed,
            self.retried + other.retried,
            self.failed + other.failed,
            self.paused or other.paused,
        )


def status_line(counts: list[StageCounts]) -> str:
    """One line for `systemctl status`: per stage, in flight and outcomes so far."""
    return "; ".join(
        f"{c.stage}: {c.in_flight} in flight, {c.completed} done, "
        f"{c.retried} retried, {c.failed} failed" + (" (paused)" if c.paused else "")
        for c in counts
    )


class Herald(Protocol):
    """Who hears how this process is doing: systemd, or a worker's parent."""

    # Seconds between `alive` calls.
    interval: float

    def ready(self, owner: str) -> None: ...

    def alive(self, counts: list[StageCounts], stuck: list[str]) -> None: ...

    def idle(self) -> None: ...

    def stopping(self) -> None: ...


class SystemdHerald:
    """A process alone tells systemd: READY=1, WATCHDOG=1 while no pool is stuck, STATUS=."""

    def __init__(self) -> None:
        self.interval = systemd.watchdog_interval() or 10.0

    def ready(self, owner: str) -> None:
        systemd.notify("READY=1\nSTATUS=running")

    def alive(self, counts: list[StageCounts], stuck: list[str]) -> None:
        if not stuck:
            systemd.notify("WATCHDOG=1")
        systemd.notify("STATUS=" + status_line(counts))

    def idle(self) -> None:
        pass

    def stopping(self) -> None:
        systemd.notify("STOPPING=1\nSTATUS=stopping: finishing in-flight work")

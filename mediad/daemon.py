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
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import structlog

from mediad import db, errors, migrate, pipeline, systemd
from mediad.config import Config
from mediad.pool import StagePool
from mediad.queue import StageQueue
from mediad.retry import Backoff
from mediad.stage import Stage

log = structlog.get_logger(__name__)

StageFactory = Callable[[Config], AbstractAsyncContextManager[Stage | None]]

NOTIFY_CHANNEL = "mediad"


def worker_name(config: Config) -> str:
    """This process's name in leases and events: unique even if a pid is reused."""
    base = config.daemon.worker_name or socket.gethostname()
    return f"{base}:{os.getpid()}:{secrets.token_hex(2)}"


async def run(
    config: Config,
    *,
    once: bool = False,
    url: str | None = None,
    factories: Sequence[StageFactory] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the daemon until stopped (or drained, with `once`)."""
    if url is None:
        url = await asyncio.to_thread(db.database_url, config)
    stop = stop or asyncio.Event()
    owner = worker_name(config)
    async with contextlib.AsyncExitStack() as stack:
        await migrate.migrate_url(url)
        pool = await db.create_pool(url, max_size=4 + len(factories or pipeline.FACTORIES) * 2)
        stack.push_async_callback(pool.close)
        stages = []
        for factory in factories if factories is not None else pipeline.FACTORIES:
            stage = await stack.enter_async_context(factory(config))
            if stage is not None:
                stages.append(stage)
        backoff = Backoff(config.daemon.backoff_base, config.daemon.backoff_max)
        pools = [
            StagePool(
                stage,
                StageQueue(pool, stage, owner, config.daemon.lease),
                backoff=backoff,
                claim_batch=config.daemon.claim_batch,
                poll_interval=config.daemon.poll_interval,
            )
            for stage in stages
        ]
        stack.enter_context(_signals(stop))
        await _supervise(config, url, owner, pools, stop, once)


async def _supervise(
    config: Config, url: str, owner: str, pools: list[StagePool], stop: asyncio.Event, once: bool
) -> None:
    by_name = {p.stage.name: p for p in pools}
    listener = Listener(url, by_name, config.daemon.poll_interval)
    helpers = [
        asyncio.create_task(listener.run(stop), name="listener"),
        asyncio.create_task(_watchdog(pools, config.daemon.poll_interval), name="watchdog"),
        asyncio.create_task(_announce_stop(stop), name="announce-stop"),
    ]
    if once:
        helpers.append(asyncio.create_task(_stop_when_drained(pools, stop), name="once"))
    runners = [
        asyncio.create_task(p.run(stop, config.daemon.shutdown_grace), name=f"pool-{p.stage.name}")
        for p in pools
    ]
    log.info("daemon_started", worker=owner, stages=list(by_name), once=once)
    systemd.notify("READY=1\nSTATUS=running")
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


async def _announce_stop(stop: asyncio.Event) -> None:
    await stop.wait()
    systemd.notify("STOPPING=1\nSTATUS=stopping: finishing in-flight work")


@contextlib.contextmanager
def _signals(stop: asyncio.Event) -> Any:
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
    for signum in (signal.SIGTERM, signal.SIGINT):
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
        due = sum([await p.queue.count_due() for p in working])
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


async def _watchdog(pools: list[StagePool], poll_interval: float) -> None:
    """WATCHDOG=1 while every pool loop keeps turning; STATUS= with what each stage did."""
    interval = systemd.watchdog_interval() or 10.0
    stale_after = max(3 * poll_interval, 30.0)
    while True:
        now = time.monotonic()
        stuck = [p.stage.name for p in pools if now - p.last_tick > stale_after]
        if stuck:
            log.error("pool_stuck", stages=stuck)
        else:
            systemd.notify("WATCHDOG=1")
        systemd.notify("STATUS=" + status_line(pools))
        await asyncio.sleep(interval)


def status_line(pools: list[StagePool]) -> str:
    """One line for `systemctl status`: per stage, in flight and outcomes so far."""
    return "; ".join(
        f"{p.stage.name}: {p.in_flight} in flight, {p.stats.completed} done, "
        f"{p.stats.retried} retried, {p.stats.failed} failed" + (" (paused)" if p.paused else "")
        for p in pools
    )

"""Decoders in worker processes: hostile bytes are decoded there, never in the daemon.

`DecoderPool` keeps `media.workers` processes, forked from a forkserver (never from the threaded
daemon), each under an address-space limit. A task is a function named in a fixed registry; its
payload and its result cross the boundary as length-prefixed JSON over a socket pair, so the
parent never unpickles anything a worker built, and bytes travel as paths to files the parent
wrote. A worker that dies or overruns its time is replaced and only its own task fails. Decodes
are admitted first come, first served, while their pixel bytes fit in `media.decode_memory`.
This module is the pool, in the daemon; decoder_worker.py is the workers' side.

Every worker runs the main script again before its own code (multiprocessing does, for spawn and
forkserver alike, unless the main module is a package's `__main__`): a script that opens a pool
keeps its work under `if __name__ == "__main__":`. The `mediad` command's workers do not run it
(cli.py names `mediad.__main__` as its module), so they hold none of the daemon's imports.
"""

from __future__ import annotations

import ast
import asyncio
import collections
import contextlib
import fcntl
import functools
import json
import math
import multiprocessing
import multiprocessing.forkserver
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

import structlog

from mediad import errors
from mediad.config import MediaConfig
from mediad.media import decoder_worker
from mediad.media.decoder_worker import HEADER, MAX_MESSAGE, MAX_WARNINGS, resolve

log = structlog.get_logger(__name__)

# The tasks a worker may run: name -> "module:function". Nothing outside a pool's registry can
# be named, so a payload cannot reach arbitrary code.
TASKS: Mapping[str, str] = {
    "probe": "mediad.media.probe:probe_task",
    "jpegs": "mediad.media.pictures:jpegs_task",
    "analyze_local": "mediad.analysis.local:analyze_task",
    "image_header": "mediad.media.images:header_task",
    "image_decode": "mediad.media.images:decode_task",
    "derive_header": "mediad.media.derivatives:header_task",
    "derive": "mediad.media.derivatives:derive_task",
}

# Requests carry paths, not bodies; a larger one is a caller's mistake.
_MAX_REQUEST = 1024**2
# Results are metadata; a larger one is a worker gone wrong, and would only cost parent memory.
_MAX_REPLY = 64 * 1024**2
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# A worker that outlives its parent still dies this long after its task's own limit.
_ALARM_MARGIN = 5
_START_TIMEOUT = 60.0
_STOP_GRACE = 2.0
_RESPAWN_DELAY = 0.5
# How long a stage whose decoder workers could not start pauses before trying again.
_START_RETRY = 30.0
_RESPAWN_DELAY_MAX = 30.0


# --- errors ---------------------------------------------------------------------------------------


class DecoderError(errors.StageError):
    """Root of the decoder pool's errors."""


class DecoderCrashedError(DecoderError, errors.TransientError):
    """The worker died during the task (a signal, the OOM killer, an exit); it was replaced."""

    error_code = "decoder_crashed"


class DecodeTimeoutError(DecoderError, errors.TransientError):
    """The task ran past its wall-clock limit; its worker was killed and replaced."""

    error_code = "decode_timeout"


class DecoderClosedError(DecoderError, errors.StagePausedError):
    """The pool is closed (the daemon is stopping): the row goes back untouched."""

    def __init__(self, message: str = "the decoder pool is closed") -> None:
        super().__init__(message, error_code="decoders_closed", pause_for=_STOP_GRACE)


class DecoderStartError(errors.StagePausedError):
    """A worker process did not start (fork failed, an import failed, a memory limit too low).

    Raised to the task that started the pool: its row goes back untouched and its stage pauses;
    the next task after the pause tries to start the workers again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code="decoders_unavailable", pause_for=_START_RETRY)


class DecodeFailedError(DecoderError, errors.PermanentError):
    """The task raised a permanent error; `error_code` is its own, `remote_class` its class name."""

    def __init__(self, message: str, *, error_code: str, remote_class: str) -> None:
        super().__init__(message, error_code=error_code)
        self.remote_class = remote_class


class DecodeTooLargeError(DecodeFailedError):
    """The decode needed more memory than a worker may have (`media.worker_memory`)."""

    error_code = "too_large"


class DecodeRetryableError(DecoderError, errors.TransientError):
    """The task raised a transient error; `error_code` is its own, `remote_class` its class name."""

    def __init__(self, message: str, *, error_code: str, remote_class: str) -> None:
        super().__init__(message, error_code=error_code)
        self.remote_class = remote_class


# --- the pool -------------------------------------------------------------------------------------


@dataclass
class DecoderStats:
    """Counters since the pool opened."""

    tasks: int = 0
    failed: int = 0
    crashed: int = 0
    timed_out: int = 0
    replaced: int = 0


@dataclass(eq=False)
class _Job:
    ident: int
    task: str
    frame: bytes
    cost: int
    time_limit: float
    future: asyncio.Future[dict[str, Any]]
    timer: asyncio.TimerHandle | None = None
    # The open file holding the host's lock on oversized decodes, while this one holds it.
    host_lock: int | None = None

    def release_host_lock(self) -> None:
        fd, self.host_lock = self.host_lock, None
        if fd is not None:
            os.close(fd)  # closing the file lets the lock go


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    pid: int
    channel: _Channel
    job: _Job | None = None
    # Set once it must take no more tasks: killed for a timeout, or leaving after a MemoryError.
    retiring: bool = False
    dead: bool = False
    reading: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def usable(self) -> bool:
        return not (self.retiring or self.dead)


class DecoderPool:
    """Worker processes that run registered decode tasks; see the module docstring."""

    def __init__(
        self,
        config: MediaConfig,
        *,
        tasks: Mapping[str, str] = TASKS,
        ready: Collection[str] | None = None,
        host_lock: str | None = None,
        start_on_demand: bool = False,
    ) -> None:
        for name, path in tasks.items():
            module, _, function = path.partition(":")
            if not module or not function.isidentifier():
                raise ValueError(f"decoder task {name!r}: {path!r} is not 'module:function'")
        self._tasks = dict(tasks)
        # The tasks whose modules the forkserver imports for every worker to share (the others
        # are imported by a worker at their first request): by default all of them.
        self._ready = sorted(self._tasks if ready is None else ready)
        unknown = set(self._ready) - set(self._tasks)
        if unknown:
            raise ValueError(f"ready names tasks not in the registry: {', '.join(sorted(unknown))}")
        # A file the host's pools lock (flock) while one runs a decode over its own budget:
        # each process of several has its share of media.decode_memory, and an oversized
        # picture, run alone in its process, would otherwise run beside another's.
        self._host_lock = host_lock
        self._size = config.worker_count
        self._memory = config.worker_memory
        self._time_limit = config.decode_timeout
        self._budget = config.decode_memory
        self._context = multiprocessing.get_context("forkserver")
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._queue: collections.deque[_Job] = collections.deque()
        self._in_use = 0
        self._next_id = 0
        self._starting: set[BaseProcess] = set()
        self._respawning: set[asyncio.Task[None]] = set()
        self._started = False
        # Started by the first task (DecoderPool.open(start=False)) rather than by start().
        self._start_on_demand = start_on_demand
        self._starting_all: asyncio.Task[None] | None = None
        self._closed = False
        self._closing = asyncio.Event()
        self.stats = DecoderStats()
        # media.in_process (benchmarks only): the tasks run in threads of the daemon itself.
        self._in_process = config.in_process
        self._threads = asyncio.Semaphore(2 * self._size)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        config: MediaConfig,
        *,
        tasks: Mapping[str, str] = TASKS,
        ready: Collection[str] | None = None,
        host_lock: str | None = None,
        start: bool = True,
    ) -> AsyncIterator[DecoderPool]:
        """A pool, closed on exit: `async with DecoderPool.open(config.media) as pool`. Its
        workers start now, or with `start=False` when the first task comes: a daemon whose
        stages have nothing to decode (`run --once` over rows only to archive) never waits the
        half second the forkserver's imports take."""
        pool = cls(config, tasks=tasks, ready=ready, host_lock=host_lock, start_on_demand=not start)
        if start:
            await pool.start()
        try:
            yield pool
        finally:
            await pool.close()

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the live workers."""
        return [worker.pid for worker in self._workers if not worker.dead]

    @property
    def admitted_bytes(self) -> int:
        """The decode memory the tasks in flight were admitted with."""
        return self._in_use

    async def start(self) -> None:
        """Start the forkserver and every worker; raise DecoderStartError if one cannot start
        (the others are stopped again: the pool stays unstarted)."""
        if self._in_process:
            self._started = True
            return
        await asyncio.to_thread(self._start_forkserver)
        launched = await asyncio.gather(
            *(self._launch() for _ in range(self._size)), return_exceptions=True
        )
        failure = next((r for r in launched if isinstance(r, BaseException)), None)
        if failure is not None:
            for result in launched:
                if isinstance(result, _Worker):
                    await _kill(result.channel, result.process)
            raise failure
        self._started = True
        for result in launched:
            self._adopt(cast(_Worker, result))

    async def _started_now(self) -> None:
        """Start the workers for the first task (every task meanwhile awaits the same start);
        after a start that failed, the next task tries again."""
        # Shielded: one task cancelled while waiting does not cancel the start the others await.
        await asyncio.shield(self._begin_start())

    def warm_up(self) -> None:
        """Begin starting the workers of a pool started on demand, without waiting, for a task
        known to come (a video still downloading): its first request then finds them up
        instead of waiting the second their imports take."""
        if self._start_on_demand and not self._started and not self._closed:
            self._begin_start()

    def _begin_start(self) -> asyncio.Task[None]:
        """The start under way, or a new one if none is or the last one failed."""
        starting = self._starting_all
        if starting is None or (
            starting.done() and (starting.cancelled() or starting.exception() is not None)
        ):
            starting = self._starting_all = asyncio.create_task(self.start(), name="decoders-start")
            # Retrieved here too, so a start nobody came to await is not logged as unhandled.
            starting.add_done_callback(lambda done: done.cancelled() or done.exception())
        return starting

    def _start_forkserver(self) -> None:
        # Workers fork from a server that has already imported the ready tasks' modules
        # (Pillow, PyAV) and what the main script imports, so a replacement costs a fork, not a
        # second of imports. The preload only counts the first time the process starts its
        # forkserver. Not this module: the workers' side is decoder_worker, without asyncio;
        # it comes first, since it sets what the numeric libraries read as they load.
        tasks = {self._tasks[name].partition(":")[0] for name in self._ready}
        others = (tasks | _main_imports()) - {decoder_worker.__name__}
        self._context.set_forkserver_preload([decoder_worker.__name__, *sorted(others)])
        multiprocessing.forkserver.ensure_running()

    async def run(
        self,
        task: str,
        payload: Mapping[str, Any],
        *,
        cost_bytes: int = 0,
        time_limit: float | None = None,
    ) -> dict[str, Any]:
        """Run `task(payload)` in a worker and return its result; raise a DecoderError.

        `cost_bytes` is the memory the decode will take (width x height x bands, from the
        header); the task waits its turn until that fits in `media.decode_memory`. `time_limit`
        overrides `media.decode_timeout`: past it the worker is killed (cancelling this await
        instead leaves the task running to its end).
        """
        if self._closed:
            raise DecoderClosedError()
        if not self._started:
            if not self._start_on_demand:
                raise RuntimeError("the decoder pool is not started: use DecoderPool.open()")
            await self._started_now()
            if self._closed:
                raise DecoderClosedError()
        if task not in self._tasks:
            raise ValueError(f"{task!r} is not a registered decoder task")
        if cost_bytes < 0:
            raise ValueError("cost_bytes cannot be negative")
        limit = self._time_limit if time_limit is None else time_limit
        if not 0 < limit < math.inf:
            raise ValueError(f"time_limit must be a positive number of seconds, got {limit!r}")
        if self._in_process:
            return await self._run_here(task, dict(payload))
        self._next_id += 1
        request = {
            "id": self._next_id,
            "task": task,
            "payload": dict(payload),
            "alarm": math.ceil(limit) + _ALARM_MARGIN,
        }
        body = json.dumps(request, separators=(",", ":"), allow_nan=False).encode()
        if len(body) > _MAX_REQUEST:
            raise ValueError(f"the payload of {task} is {len(body)} bytes: pass bytes as a path")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        job = _Job(self._next_id, task, HEADER.pack(len(body)) + body, cost_bytes, limit, future)
        if cost_bytes > self._budget and self._host_lock is not None:
            # Held until the decode ends (_finish), not until this await does: a cancelled
            # caller leaves the decode running, its memory in use.
            job.host_lock = await _locked(self._host_lock)
            if self._closed:
                job.release_host_lock()
                raise DecoderClosedError()
        self.stats.tasks += 1
        self._queue.append(job)
        self._dispatch()
        try:
            # Cancelling this await cancels the future: a queued job is then skipped, and a
            # running one runs on (its memory is in use) with nobody waiting for its result.
            return await future
        except asyncio.CancelledError:
            self._dispatch()
            raise

    async def _run_here(self, task: str, payload: dict[str, Any]) -> dict[str, Any]:
        """media.in_process: the task in a thread of this process, with no limit at all."""
        function = resolve(self._tasks[task])
        self.stats.tasks += 1
        async with self._threads:
            try:
                return await asyncio.to_thread(function, payload)
            except MemoryError:
                raise errors.MediaTooLargeError("the file is too large to decode") from None

    async def close(self) -> None:
        """Stop the workers (SIGTERM, then SIGKILL after a grace) and fail every pending task."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._starting_all is not None and not self._starting_all.done():
            # Workers launched meanwhile are adopted as retiring and killed (_adopt).
            await asyncio.gather(self._starting_all, return_exceptions=True)
        while self._queue:
            job = self._queue.popleft()
            job.release_host_lock()
            if not job.future.done():
                job.future.set_exception(DecoderClosedError())
        for worker in self._workers:
            worker.retiring = True
            _signal(worker.process, signal.SIGTERM)
        for process in self._starting:
            _signal(process, signal.SIGTERM)
        waiting = {w.reading for w in self._workers if w.reading is not None} | self._respawning
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=_STOP_GRACE)
            if late:
                for worker in self._workers:
                    _signal(worker.process, signal.SIGKILL)
                for process in self._starting:
                    _signal(process, signal.SIGKILL)
                await asyncio.wait(late)

    # --- scheduling -------------------------------------------------------------------------------

    def _fits(self, cost: int) -> bool:
        # Nothing admitted: even a picture larger than the whole budget goes, and runs alone.
        return self._in_use == 0 or self._in_use + cost <= self._budget

    def _dispatch(self) -> None:
        """Start queued jobs, oldest first, while a worker is idle and the head's cost fits."""
        queue = self._queue
        while queue:
            job = queue[0]
            if job.future.done():
                queue.popleft()  # its caller was cancelled before it started
                job.release_host_lock()
                continue
            if not self._idle or not self._fits(job.cost):
                return
            queue.popleft()
            worker = self._idle.pop()
            self._in_use += job.cost
            worker.job = job
            job.timer = asyncio.get_running_loop().call_later(
                job.time_limit, self._timed_out, worker, job
            )
            worker.channel.send(job.frame)

    def _finish(self, worker: _Worker, job: _Job, outcome: dict[str, Any] | BaseException) -> None:
        if job.timer is not None:
            job.timer.cancel()
        job.release_host_lock()
        worker.job = None
        self._in_use -= job.cost
        if worker.usable and not self._closed:
            self._idle.append(worker)
        if isinstance(outcome, BaseException):
            self.stats.failed += 1
            if not job.future.done():
                job.future.set_exception(outcome)
        elif not job.future.done():
            job.future.set_result(outcome)
        self._dispatch()

    def _timed_out(self, worker: _Worker, job: _Job) -> None:
        if worker.job is not job:
            return
        self.stats.timed_out += 1
        worker.retiring = True
        _signal(worker.process, signal.SIGKILL)
        log.warning("decode_timed_out", task=job.task, pid=worker.pid, limit=job.time_limit)
        self._finish(
            worker,
            job,
            DecodeTimeoutError(
                f"{job.task} ran past its {job.time_limit:g}s limit; its decoder worker was killed"
            ),
        )

    def _on_reply(self, worker: _Worker, body: bytes) -> None:
        job = worker.job
        if job is None and worker.retiring:
            return  # the answer of a task that ran out of time as it finished: the worker dies
        try:
            reply = json.loads(body)
        except ValueError as exc:
            raise _ProtocolError(f"a reply is not JSON ({exc})") from None
        if not isinstance(reply, dict):
            raise _ProtocolError("a reply is not a JSON object")
        if job is None or reply.get("id") != job.ident:
            raise _ProtocolError(f"a reply for a task it was not given ({reply.get('id')!r})")
        if reply.get("retire") is True:
            worker.retiring = True
        caught = reply.get("warnings", [])
        if not isinstance(caught, list):
            raise _ProtocolError("a reply's warnings are not a list")
        for text in caught[:MAX_WARNINGS]:
            log.warning("decoder_warning", task=job.task, warning=str(text)[:MAX_MESSAGE])
        if "ok" in reply:
            result = reply["ok"]
            if not isinstance(result, dict):
                raise _ProtocolError("a result is not a JSON object")
            self._finish(worker, job, result)
        elif isinstance(reply.get("error"), dict):
            self._finish(worker, job, _task_error(job.task, reply["error"]))
        else:
            raise _ProtocolError("a reply has neither a result nor an error")

    # --- workers ----------------------------------------------------------------------------------

    async def _launch(self) -> _Worker:
        """Start one worker and wait for its hello."""
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=decoder_worker.main,
            args=(theirs, self._tasks, self._memory, self._ready),
            name="mediad-decoder",
            daemon=True,
        )
        try:
            # Starting talks to the forkserver and waits for the new pid: not on the loop.
            await asyncio.to_thread(process.start)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._starting.add(process)
        try:
            if self._closed:
                _signal(process, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            _, channel = await loop.create_unix_connection(_Channel, sock=ours)
            try:
                hello = json.loads(await asyncio.wait_for(channel.hello, _START_TIMEOUT))
                pid = hello["ready"]
                if not isinstance(pid, int):
                    raise TypeError(f"the hello names no pid: {hello!r}")
            except BaseException as exc:
                how = await _kill(channel, process)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise DecoderStartError(
                    f"a decoder worker did not start ({how}): {type(exc).__name__}: {exc}"
                ) from None
        finally:
            self._starting.discard(process)
        return _Worker(process, pid, channel)

    def _adopt(self, worker: _Worker) -> None:
        self._workers.append(worker)
        worker.channel.on_frame = functools.partial(self._on_reply, worker)
        worker.reading = asyncio.create_task(self._serve(worker), name=f"decoder-{worker.pid}")
        if self._closed:
            worker.retiring = True
            _signal(worker.process, signal.SIGKILL)
        else:
            self._idle.append(worker)
            self._dispatch()

    async def _serve(self, worker: _Worker) -> None:
        """Wait until the worker's socket closes; then fail its task and replace it."""
        await worker.channel.closed
        broke = worker.channel.broke
        if broke:
            # A worker that sends what the protocol does not allow may have been subverted.
            _signal(worker.process, signal.SIGKILL)
        worker.dead = True
        if worker in self._idle:
            self._idle.remove(worker)
        how = await _reap(worker.process)
        job = worker.job
        if job is not None:
            if self._closed:
                failure: BaseException = DecoderClosedError()
            else:
                self.stats.crashed += 1
                what = f"broke the protocol: {broke}" if broke else f"died ({how})"
                failure = DecoderCrashedError(f"the decoder worker {what} during {job.task}")
            self._finish(worker, job, failure)
        self._workers.remove(worker)
        if self._closed:
            return
        if job is not None or broke or not worker.retiring:
            task = job.task if job is not None else None
            log.warning("decoder_worker_died", pid=worker.pid, how=broke or how, task=task)
        respawn = asyncio.create_task(self._respawn(), name="decoder-respawn")
        self._respawning.add(respawn)
        respawn.add_done_callback(self._respawning.discard)

    async def _respawn(self) -> None:
        """Start a replacement worker, retrying with backoff while starting fails."""
        delay = _RESPAWN_DELAY
        while not self._closed:
            try:
                worker = await self._launch()
            except DecoderStartError as exc:
                if self._closed:
                    return
                log.error("decoder_worker_start_failed", error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, _RESPAWN_DELAY_MAX)
                continue
            self.stats.replaced += 1
            self._adopt(worker)
            return


def _main_imports() -> set[str]:
    """The modules the main script imports at its top level.

    multiprocessing runs the main script again in every worker before the worker's own code
    (Python 3.11's forkserver cannot preload it), and the `mediad` script imports the whole
    daemon: with these already imported by the forkserver, that run costs nothing.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if path is None or (spec is not None and spec.name.endswith(".__main__")):
        return set()  # `python -m package` is not run again
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in sys.modules}


class _ProtocolError(Exception):
    """A worker sent something the protocol does not allow."""


class _Channel(asyncio.Protocol):
    """The parent's end of a worker's socket: frames out, and each frame in handed to `on_frame`.

    A protocol rather than a stream reader: a reply is handled in the callback that reads it,
    without waking a coroutine, which is a good part of a round trip's cost to the parent.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        # The worker's first frame, its hello.
        self.hello: asyncio.Future[bytes] = loop.create_future()
        # Done when the connection ends: the worker exited, was killed, or broke the protocol.
        self.closed: asyncio.Future[None] = loop.create_future()
        self.on_frame: Callable[[bytes], None] | None = None
        # Why the parent hung up on the worker, if it did.
        self.broke: str | None = None
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream socket's transport (uvloop's is one without subclassing asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER.size and self.broke is None:
            (size,) = HEADER.unpack_from(buffer)
            if size > _MAX_REPLY:
                self.abort(f"a reply of {size} bytes")
                return
            end = HEADER.size + size
            if len(buffer) < end:
                return
            frame = bytes(buffer[HEADER.size : end])
            del buffer[:end]
            if not self.hello.done():
                self.hello.set_result(frame)
            elif self.on_frame is None:
                self.abort("a frame before any request")
            else:
                try:
                    self.on_frame(frame)
                except _ProtocolError as exc:
                    self.abort(str(exc))
                except Exception as exc:
                    self.abort(f"{type(exc).__name__}: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            self.hello.set_exception(ConnectionError("the worker closed its socket"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frame: bytes) -> None:
        assert self._transport is not None
        self._transport.write(frame)

    def abort(self, why: str) -> None:
        self.broke = why
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _locked(path: str) -> int:
    """An open file of `path` holding its exclusive flock, taken in a thread (it may wait for
    another process); a caller cancelled meanwhile leaves nothing held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    locking = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
    try:
        await asyncio.shield(locking)
    except BaseException:
        # Cancelled, or the flock failed: the file is closed once the thread is done with it,
        # which lets go of a lock it took after all.
        def close(done: asyncio.Future[None]) -> None:
            if not done.cancelled():
                done.exception()  # retrieved: the error on its way out is the one reported
            os.close(fd)

        locking.add_done_callback(close)
        raise
    return fd


async def _kill(channel: _Channel, process: BaseProcess) -> str:
    """Drop a worker that is not (or no longer) part of the pool: its socket, then its process;
    how it ended."""
    channel.close()
    _signal(process, signal.SIGKILL)
    return await _reap(process)


def _signal(process: BaseProcess, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, ValueError):
        if process.pid is not None:
            os.kill(process.pid, signum)


def _exitcode(process: BaseProcess) -> int | None:
    # Another thread starting a process polls every child too, and may read the forkserver's
    # status message first: then the status is simply not known here.
    for _ in range(2):
        with contextlib.suppress(EOFError, OSError):
            return process.exitcode
    return None


async def _reap(process: BaseProcess) -> str:
    """Wait for the process to end (killing it after a grace) and say how it ended."""
    if not await _wait_exit(process, _STOP_GRACE):
        _signal(process, signal.SIGKILL)
        if not await _wait_exit(process, _STOP_GRACE):
            return "did not exit after SIGKILL"
    code = _exitcode(process)
    process.close()
    if code is None:
        return "ended"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"


async def _wait_exit(process: BaseProcess, grace: float) -> bool:
    if _exitcode(process) is not None:
        return True
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    loop.add_reader(process.sentinel, ended.set)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), grace)
    finally:
        loop.remove_reader(process.sentinel)
    return _exitcode(process) is not None


def _task_error(task: str, record: dict[str, Any]) -> DecoderError:
    """The parent's error for a task's error record; the worker's text is bounded, never trusted."""
    code = record.get("error_code")
    if not isinstance(code, str) or not _ERROR_CODE.fullmatch(code):
        code = errors.StageError.error_code
    message = str(record.get("message", ""))[:MAX_MESSAGE] or f"{task} failed"
    remote_class = str(record.get("class", ""))[:100]
    trace = record.get("traceback")
    if isinstance(trace, str):
        log.warning("decoder_task_error", task=task, error_class=remote_class, traceback=trace)
    if record.get("transient") is True:
        return DecodeRetryableError(message, error_code=code, remote_class=remote_class)
    if code == DecodeTooLargeError.error_code:
        return DecodeTooLargeError(message, error_code=code, remote_class=remote_class)
    return DecodeFailedError(message, error_code=code, remote_class=remote_class)


# --- admission ------------------------------------------------------------------------------------

# What decoding a video's first frames takes besides its frames: FFmpeg's buffers and a few
# frames in flight in its threads. The download's probe is admitted at this; a derive's at
# this plus the frames it keeps.
VIDEO_DECODE_BYTES = 64 * 1024 * 1024


def pixel_bytes(header: Mapping[str, Any]) -> int:
    """The memory one frame of a picture decodes into, from the `image_header` task's result
    (images.header_task)."""
    return int(header["width"]) * int(header["height"]) * int(header["bands"])

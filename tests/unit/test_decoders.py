"""The decoder pool with real worker processes: results, errors, crashes, limits, the budget."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mediad import config, errors
from mediad.config import MediaConfig
from mediad.media import decoder_worker, decoders
from tests import media

# --- tasks the workers run (this module is imported in each worker) -------------------------------


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload, "pid": os.getpid()}


def fail(payload: dict[str, Any]) -> dict[str, Any]:
    kind = payload["kind"]
    if kind == "permanent":
        raise errors.PermanentError("the bytes are not media", error_code="not_media")
    if kind == "transient":
        raise errors.TransientError("the disk hiccuped", error_code="io_error")
    raise ValueError("a bug in the task")


def crash(payload: dict[str, Any]) -> dict[str, Any]:
    if payload["how"] == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def hold(payload: dict[str, Any]) -> dict[str, Any]:
    """Check in at the test's rendezvous with a name and this pid, then wait for an answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(payload["rendezvous"])
        sock.sendall(f"{payload.get('name', '-')} {os.getpid()}\n".encode())
        answer = sock.recv(64)
    return {"pid": os.getpid(), "answer": answer.decode()}


def sleep(payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(payload["seconds"])
    return {}


def interval(payload: dict[str, Any]) -> dict[str, Any]:
    """Hold the worker a moment and say when (CLOCK_MONOTONIC is one clock for all processes)."""
    start = time.monotonic()
    time.sleep(payload["seconds"])
    return {"name": payload["name"], "start": start, "end": time.monotonic()}


def allocate(payload: dict[str, Any]) -> dict[str, Any]:
    block = bytearray(payload["bytes"])
    return {"allocated": len(block)}


def not_json(payload: dict[str, Any]) -> dict[str, Any]:
    return {"raw": b"\x00bytes"}


def not_a_dict(payload: dict[str, Any]) -> dict[str, Any]:
    return [1, 2, 3]  # type: ignore[return-value]


def warn(payload: dict[str, Any]) -> dict[str, Any]:
    import warnings

    warnings.warn("EXIF block is damaged", UserWarning, stacklevel=1)
    return {}


def numeric_threads(payload: dict[str, Any]) -> dict[str, Any]:
    """Load numpy (its OpenBLAS) here, and say how many threads this process then runs."""
    import numpy

    return {
        "numpy": numpy.__version__,
        "threads": len(os.listdir("/proc/self/task")),
        "environment": {name: os.environ.get(name) for name in decoder_worker.THREAD_COUNTS},
    }


TASKS = {
    **decoders.TASKS,
    **{
        name: f"{__name__}:{name}"
        for name in (
            "echo",
            "fail",
            "crash",
            "hold",
            "sleep",
            "interval",
            "allocate",
            "not_json",
            "not_a_dict",
            "warn",
            "numeric_threads",
        )
    },
}


# --- helpers --------------------------------------------------------------------------------------


def media_config(**overrides: Any) -> MediaConfig:
    values: dict[str, Any] = {
        "workers": 2,
        "worker_memory": 1024**3,
        "decode_timeout": 30.0,
        "decode_memory": 100,
    }
    values.update(overrides)
    return MediaConfig(**values)


@contextlib.asynccontextmanager
async def open_pool(**overrides: Any) -> AsyncIterator[decoders.DecoderPool]:
    async with decoders.DecoderPool.open(media_config(**overrides), tasks=TASKS) as opened:
        yield opened


@dataclass
class Arrival:
    name: str
    pid: int
    answer: asyncio.StreamWriter

    def release(self) -> None:
        """Let the held task return."""
        self.answer.write(b"go")
        self.answer.close()


class Rendezvous:
    """A Unix socket `hold` tasks check in at; the test answers one to let it return."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._arrivals: asyncio.Queue[Arrival] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Rendezvous:
        self._server = await asyncio.start_unix_server(self._arrive, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _arrive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name, pid = (await reader.readline()).decode().split()
        self._arrivals.put_nowait(Arrival(name, int(pid), writer))

    async def arrival(self) -> Arrival:
        """The next task to check in."""
        return await asyncio.wait_for(self._arrivals.get(), 30)

    async def arrivals(self, count: int) -> dict[str, Arrival]:
        """The next `count` tasks to check in, by name."""
        return {a.name: a for a in [await self.arrival() for _ in range(count)]}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path is at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="dec-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _until_blocked_on(path: str) -> None:
    """Return once some process waits for a lock of the file at `path` (/proc/locks marks its
    request "->"), looking every 10 ms for 30 s at most."""
    inode = os.stat(path).st_ino
    for _ in range(3000):
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                fields = line.split()
                if "->" in fields and int(fields[-3].rsplit(":", 1)[1]) == inode:
                    return
        time.sleep(0.01)
    raise AssertionError(f"nobody waits for the lock of {path}")


def _lock_is_free(path: str) -> bool:
    """Whether this process can take the file's exclusive flock now (then let go at once)."""
    with open(path, "rb") as probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["start"] < b["end"] and b["start"] < a["end"])


# --- configuration -------------------------------------------------------------------------------


def test_media_keys_parse_and_zero_workers_means_one_per_core(tmp_path: Path) -> None:
    """[media] sizes and durations parse, env overrides apply, and workers = 0 is the core count."""
    path = tmp_path / "config.toml"
    path.write_text('[media]\nworker_memory = "2GiB"\ndecode_timeout = "90s"\n')
    loaded = config.load(path, env={"MEDIAD_MEDIA_WORKERS": "0"}).media
    assert (loaded.worker_memory, loaded.decode_timeout) == (2 * 1024**3, 90.0)
    assert loaded.decode_memory == 512 * 1024**2
    assert loaded.worker_count == len(os.sched_getaffinity(0))
    with pytest.raises(errors.ConfigError, match=r"media\.worker_memory"):
        config.load(None, env={"MEDIAD_MEDIA_WORKER_MEMORY": "64MiB"})


# --- results and errors ---------------------------------------------------------------------------


async def test_a_task_returns_its_json_result() -> None:
    """A task's dict comes back as plain data, from a worker process other than this one."""
    async with open_pool() as pool:
        result = await pool.run("echo", {"n": 1, "s": "é", "list": [1.5, None]})
    assert result["echo"] == {"n": 1, "s": "é", "list": [1.5, None]}
    assert result["pid"] != os.getpid()


async def test_in_process_runs_the_same_task_in_this_process() -> None:
    """media.in_process (the benchmarks' comparison) runs the task here, with the same result
    and the same errors, and starts no worker."""
    async with open_pool(in_process=True) as pool:
        result = await pool.run("echo", {"n": 1})
        with pytest.raises(errors.PermanentError):
            await pool.run("fail", {"kind": "permanent"})
        assert pool.worker_pids == []
    assert result == {"echo": {"n": 1}, "pid": os.getpid()}


async def test_a_pool_opened_to_start_on_demand_starts_its_workers_with_the_first_task() -> None:
    """The daemon's pools start no process until something is to be decoded; tasks that come
    together share one start, and the workers then serve the tasks that follow."""
    settings = media_config()
    async with decoders.DecoderPool.open(settings, tasks=TASKS, start=False) as pool:
        assert pool.worker_pids == []
        first = await asyncio.gather(*(pool.run("echo", {"n": n}) for n in range(4)))
        pids = pool.worker_pids
        later = await pool.run("echo", {"n": 4})
    assert len(pids) == 2
    assert {r["pid"] for r in first} | {later["pid"]} <= set(pids)


async def test_a_pool_warmed_up_starts_its_workers_before_its_first_task() -> None:
    """warm_up (a video still downloading) starts the workers without waiting; the first task
    then finds them up and is served by them, in no second start."""
    async with decoders.DecoderPool.open(media_config(), tasks=TASKS, start=False) as pool:
        pool.warm_up()
        warming = pool._starting_all
        pool.warm_up()  # one start, however often asked
        assert warming is not None and pool._starting_all is warming and not warming.done()
        await warming
        pids = pool.worker_pids
        assert len(pids) == 2
        result = await pool.run("echo", {"n": 1})
        assert pool.worker_pids == pids
    assert result["pid"] in pids


async def test_a_warm_up_that_fails_is_tried_again_by_the_first_task() -> None:
    """A start begun by warm_up that fails is nobody's error until a task comes: that task
    starts the pool again (and fails, as the start does, with DecoderStartError)."""
    broken = {**TASKS, "missing": "tests.unit.no_such_module:task"}
    async with decoders.DecoderPool.open(media_config(), tasks=broken, start=False) as pool:
        pool.warm_up()
        warming = pool._starting_all
        assert warming is not None
        await asyncio.gather(warming, return_exceptions=True)
        with pytest.raises(decoders.DecoderStartError):
            await pool.run("echo", {})
        assert pool._starting_all is not warming


async def test_workers_that_cannot_start_pause_the_stage_and_are_tried_again() -> None:
    """A worker that cannot start (here its task module does not import) fails the task that
    started the pool with DecoderStartError, a pause of its stage that hands the row back
    untouched, not a failure of the row; the pool stays open and the next task tries again."""
    broken = {**TASKS, "missing": "tests.unit.no_such_module:task"}
    async with decoders.DecoderPool.open(media_config(), tasks=broken, start=False) as pool:
        for _ in range(2):
            with pytest.raises(decoders.DecoderStartError) as raised:
                await pool.run("echo", {})
            assert isinstance(raised.value, errors.StagePausedError)
            assert raised.value.error_code == "decoders_unavailable"
            assert pool.worker_pids == []


async def test_workers_are_forked_from_the_forkserver_not_from_the_daemon() -> None:
    """Worker processes are not children of the (threaded) parent: a forkserver forks them."""
    async with open_pool() as pool:
        pids = pool.worker_pids
        for pid in pids:
            stat = await asyncio.to_thread(Path(f"/proc/{pid}/stat").read_text)
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            assert ppid != os.getpid()
    assert len(pids) == 2


async def test_each_worker_runs_under_its_address_space_limit() -> None:
    """RLIMIT_AS of every worker is media.worker_memory."""
    async with open_pool(worker_memory=300 * 1024**2) as pool:
        for pid in pool.worker_pids:
            limits = await asyncio.to_thread(Path(f"/proc/{pid}/limits").read_text)
            line = next(li for li in limits.splitlines() if li.startswith("Max address space"))
            assert line.split()[3:5] == [str(300 * 1024**2)] * 2


async def test_numeric_libraries_start_no_threads_of_their_own_in_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numpy loaded in a worker runs in its one thread, whatever the daemon's environment says:
    each OpenBLAS thread would reserve its buffers out of the worker's address space."""
    for name in decoder_worker.THREAD_COUNTS:
        monkeypatch.delenv(name, raising=False)
    async with open_pool(workers=1) as pool:
        result = await pool.run("numeric_threads", {})

    assert result["threads"] == 1
    assert result["environment"] == dict.fromkeys(decoder_worker.THREAD_COUNTS, "1")


@pytest.mark.parametrize(
    ("kind", "cls", "code", "remote"),
    [
        ("permanent", decoders.DecodeFailedError, "not_media", "PermanentError"),
        ("transient", decoders.DecodeRetryableError, "io_error", "TransientError"),
        ("bug", decoders.DecodeFailedError, "internal_error", "ValueError"),
    ],
)
async def test_an_exception_in_the_task_becomes_the_mapped_mediad_error(
    kind: str, cls: type[decoders.DecoderError], code: str, remote: str
) -> None:
    """The task's error record is raised here as a Permanent- or TransientError with its code."""
    async with open_pool(workers=1) as pool:
        with pytest.raises(cls) as caught:
            await pool.run("fail", {"kind": kind})
        pid = pool.worker_pids
        assert (await pool.run("echo", {}))["pid"] in pid  # the same worker carries on
    assert caught.value.error_code == code
    assert getattr(caught.value, "remote_class") == remote  # noqa: B009
    family = errors.TransientError if kind == "transient" else errors.PermanentError
    assert isinstance(caught.value, family)


@pytest.mark.parametrize("task", ["not_json", "not_a_dict"])
async def test_a_result_json_cannot_carry_is_a_clear_error(task: str) -> None:
    """A task returning bytes (or a non-dict) fails with a message saying so; nothing is pickled."""
    async with open_pool(workers=1) as pool:
        with pytest.raises(decoders.DecodeFailedError) as caught:
            await pool.run(task, {})
    assert caught.value.error_code == "internal_error"
    assert "JSON cannot carry" in str(caught.value) or "not a dict" in str(caught.value)


async def test_an_unregistered_task_is_refused_before_any_worker_sees_it() -> None:
    """Only names in the pool's registry can be run."""
    async with open_pool(workers=1) as pool:
        with pytest.raises(ValueError, match="not a registered"):
            await pool.run("os:system", {"command": "true"})


async def test_a_payload_too_big_to_be_a_path_is_refused() -> None:
    """Bodies travel as paths to files: a megabyte of JSON in the request is a mistake."""
    async with open_pool(workers=1) as pool:
        with pytest.raises(ValueError, match="as a path"):
            await pool.run("echo", {"body": "x" * 2 * 1024**2})


async def test_warnings_in_the_worker_come_back_as_log_events() -> None:
    """A Python warning raised during a task is logged by the parent, not printed by the worker."""
    import structlog.testing

    async with open_pool(workers=1) as pool:
        with structlog.testing.capture_logs() as logs:
            await pool.run("warn", {})
    assert [e["warning"] for e in logs if e["event"] == "decoder_warning"] == [
        "UserWarning: EXIF block is damaged"
    ]


# --- real decodes -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"])
async def test_a_real_picture_decodes_in_a_worker(tmp_path: Path, fmt: str) -> None:
    """Pillow in a worker reads a real file's header, then decodes its pixels; its size is right."""
    path = tmp_path / "picture"
    path.write_bytes(media.image(fmt, 120, 80))
    async with open_pool(decode_memory=512 * 1024**2) as pool:
        header = await pool.run("image_header", {"path": str(path)})
        decoded = await pool.run(
            "image_decode", {"path": str(path)}, cost_bytes=decoders.pixel_bytes(header)
        )
    assert (header["width"], header["height"], header["format"]) == (120, 80, fmt)
    assert decoders.pixel_bytes(header) == 120 * 80 * Image.getmodebands(header["mode"])
    assert decoded == header


async def test_bytes_that_are_no_allowed_picture_fail_as_corrupt_media(tmp_path: Path) -> None:
    """A truncated PNG or a format outside the allowlist fails the task, not the worker."""
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(media.png(300, 200)[:400])
    icon = tmp_path / "icon.ico"
    icon.write_bytes(media.image("ICO", 32, 32))
    async with open_pool(workers=1) as pool:
        for path in (truncated, icon):
            with pytest.raises(decoders.DecodeFailedError) as caught:
                await pool.run("image_decode", {"path": str(path)})
            assert caught.value.error_code == "corrupt_media"


# --- crashes, time and memory limits -----------------------------------------------------------


async def test_a_killed_worker_fails_only_its_task_and_is_replaced(short_dir: Path) -> None:
    """SIGKILL mid-task: that task is decoder_crashed; the other worker's and later tasks run."""
    async with open_pool() as pool, Rendezvous(short_dir / "rv") as rv:
        victim = asyncio.ensure_future(pool.run("hold", {"rendezvous": rv.path, "name": "v"}))
        other = asyncio.ensure_future(pool.run("hold", {"rendezvous": rv.path, "name": "o"}))
        held = await rv.arrivals(2)
        queued = asyncio.ensure_future(pool.run("echo", {"queued": True}))
        os.kill(held["v"].pid, signal.SIGKILL)
        with pytest.raises(decoders.DecoderCrashedError) as caught:
            await victim
        assert not other.done()
        held["o"].release()
        assert (await other) == {"pid": held["o"].pid, "answer": "go"}
        assert (await queued)["echo"] == {"queued": True}
        # Two tasks at once again: both workers serve, and neither is the killed one.
        again = [
            asyncio.ensure_future(pool.run("hold", {"rendezvous": rv.path, "name": name}))
            for name in "ab"
        ]
        arrived = await rv.arrivals(2)
        for arrival in arrived.values():
            arrival.release()
        await asyncio.gather(*again)
        assert held["v"].pid not in {a.pid for a in arrived.values()}
        assert {a.pid for a in arrived.values()} == set(pool.worker_pids)
    assert caught.value.error_code == "decoder_crashed"
    assert isinstance(caught.value, errors.TransientError)
    assert "died (killed by SIGKILL) during hold" in str(caught.value)


@pytest.mark.parametrize(("how", "said"), [("exit", "exited with status 3"), ("segv", "SIGSEGV")])
async def test_a_worker_that_exits_or_segfaults_is_decoder_crashed(how: str, said: str) -> None:
    """os._exit or a segfault fails the task with decoder_crashed saying how; the pool serves on."""
    async with open_pool(workers=1) as pool:
        with pytest.raises(decoders.DecoderCrashedError, match=said):
            await pool.run("crash", {"how": how})
        assert await pool.run("echo", {"after": how}) == {
            "echo": {"after": how},
            "pid": pool.worker_pids[0],
        }
        assert pool.stats.crashed == 1 and pool.stats.replaced == 1


async def test_a_task_past_its_time_limit_is_decode_timeout_and_the_pool_recovers() -> None:
    """A sleeping decode past its limit: its worker is killed, decode_timeout, then a new worker."""
    async with open_pool(workers=1, decode_timeout=0.3) as pool:
        (before,) = pool.worker_pids
        started = time.monotonic()
        with pytest.raises(decoders.DecodeTimeoutError) as caught:
            await pool.run("sleep", {"seconds": 60})
        assert time.monotonic() - started < 10
        result = await pool.run("echo", {})
        assert result["pid"] != before
        with contextlib.suppress(ProcessLookupError), pytest.raises(ProcessLookupError):
            os.kill(before, 0)
    assert caught.value.error_code == "decode_timeout"
    assert isinstance(caught.value, errors.TransientError)


async def test_a_decode_past_the_memory_limit_is_too_large() -> None:
    """Allocating 2 GiB in a worker limited to 256 MiB fails the task too_large; the pool lives."""
    async with open_pool(workers=1, worker_memory=256 * 1024**2) as pool:
        with pytest.raises(decoders.DecodeTooLargeError) as caught:
            await pool.run("allocate", {"bytes": 2 * 1024**3})
        assert (await pool.run("allocate", {"bytes": 16 * 1024**2})) == {"allocated": 16 * 1024**2}
    assert caught.value.error_code == "too_large"
    assert isinstance(caught.value, errors.PermanentError)
    assert "needs more than 256 MiB to decode" in str(caught.value)


# --- the decode memory budget -------------------------------------------------------------------


async def test_two_tasks_costing_60_percent_of_the_budget_never_overlap() -> None:
    """Admission by cost: with two idle workers, two 60% decodes still run one after the other."""
    async with open_pool(workers=2, decode_memory=100) as pool:
        a, b = await asyncio.gather(
            pool.run("interval", {"name": "a", "seconds": 0.2}, cost_bytes=60),
            pool.run("interval", {"name": "b", "seconds": 0.2}, cost_bytes=60),
        )
    assert not overlap(a, b)
    assert a["end"] <= b["start"]  # first come, first served


async def test_two_tasks_that_fit_together_run_at_once(short_dir: Path) -> None:
    """The control: two 40% decodes are both in flight before either is let go."""
    async with open_pool(workers=2, decode_memory=100) as pool, Rendezvous(short_dir / "rv") as rv:
        runs = [
            asyncio.ensure_future(pool.run("hold", {"rendezvous": rv.path}, cost_bytes=40))
            for _ in range(2)
        ]
        arrivals = [await rv.arrival() for _ in range(2)]
        assert pool.admitted_bytes == 80
        for arrival in arrivals:
            arrival.release()
        assert {r["pid"] for r in await asyncio.gather(*runs)} == {a.pid for a in arrivals}
    assert pool.admitted_bytes == 0


async def test_a_task_larger_than_the_budget_runs_alone_and_in_its_turn() -> None:
    """An over-budget decode waits for the one before it, runs alone, and later ones wait for it."""
    async with open_pool(workers=3, decode_memory=100) as pool:
        small1, big, small2 = await asyncio.gather(
            pool.run("interval", {"name": "s1", "seconds": 0.2}, cost_bytes=30),
            pool.run("interval", {"name": "big", "seconds": 0.2}, cost_bytes=150),
            pool.run("interval", {"name": "s2", "seconds": 0.2}, cost_bytes=30),
        )
    assert not overlap(big, small1) and not overlap(big, small2)
    assert small1["end"] <= big["start"] <= big["end"] <= small2["start"]


async def test_oversized_tasks_of_the_host_s_pools_take_turns_on_its_lock(
    short_dir: Path,
) -> None:
    """Each of a host's processes has its share of decode_memory: an oversized decode runs
    alone in its pool and, holding the host's lock, never beside another pool's oversized one.
    A decode within its budget takes no lock."""
    lock = str(short_dir / "oversized.lock")

    def opened(**overrides: Any) -> contextlib.AbstractAsyncContextManager[decoders.DecoderPool]:
        return decoders.DecoderPool.open(media_config(**overrides), tasks=TASKS, host_lock=lock)

    async with (
        opened(workers=1, decode_memory=100) as one,
        opened(workers=1, decode_memory=100) as other,
    ):
        a, b = await asyncio.gather(
            one.run("interval", {"name": "a", "seconds": 0.3}, cost_bytes=150),
            other.run("interval", {"name": "b", "seconds": 0.3}, cost_bytes=150),
        )
        assert not overlap(a, b)
        async with Rendezvous(short_dir / "rv") as rv:
            holding = asyncio.ensure_future(
                one.run("hold", {"rendezvous": rv.path}, cost_bytes=150)
            )
            held = await rv.arrival()
            assert not _lock_is_free(lock)
            # Within the budget: no turn to wait for, though the lock is held.
            assert (await other.run("echo", {"x": 1}, cost_bytes=60))["echo"] == {"x": 1}
            held.release()
            await holding
        # The decode over, its lock is let go.
        assert _lock_is_free(lock)


async def test_a_caller_cancelled_while_waiting_for_the_host_s_lock_leaves_it_free(
    short_dir: Path,
) -> None:
    lock = short_dir / "oversized.lock"
    lock.touch()
    # Another process's oversized decode holds the lock.
    holder = os.open(lock, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        async with decoders.DecoderPool.open(
            media_config(workers=1, decode_memory=100), tasks=TASKS, host_lock=str(lock)
        ) as pool:
            waiting = asyncio.ensure_future(pool.run("echo", {}, cost_bytes=150))
            await asyncio.to_thread(_until_blocked_on, str(lock))
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            fcntl.flock(holder, fcntl.LOCK_UN)
            # The abandoned wait took the lock as it was let go, and gave it back at once.
            assert (await pool.run("echo", {"x": 2}, cost_bytes=150))["echo"] == {"x": 2}
    finally:
        os.close(holder)
    assert _lock_is_free(str(lock))


async def test_a_cancelled_queued_task_frees_its_turn(short_dir: Path) -> None:
    """Cancelling a task still waiting for budget drops it: the one behind it runs at once."""
    async with open_pool(workers=2, decode_memory=100) as pool, Rendezvous(short_dir / "rv") as rv:
        holding = asyncio.ensure_future(pool.run("hold", {"rendezvous": rv.path}, cost_bytes=60))
        held = await rv.arrival()
        waiting = asyncio.ensure_future(pool.run("echo", {"x": 1}, cost_bytes=60))
        behind = asyncio.ensure_future(pool.run("echo", {"x": 2}, cost_bytes=10))
        # One turn of the loop runs both tasks up to their wait in the queue (no timing involved).
        await asyncio.sleep(0)
        assert pool.stats.tasks == 3
        waiting.cancel()
        # Before the holder is let go: the cancelled task no longer blocks the queue's head.
        assert (await asyncio.wait_for(behind, 30))["echo"] == {"x": 2}
        held.release()
        await holding
        assert waiting.cancelled()


# --- shutdown ---------------------------------------------------------------------------------


async def test_closing_fails_running_and_queued_tasks_promptly(short_dir: Path) -> None:
    """close() stops the workers and every pending task raises DecoderClosedError; no hang."""
    pool = decoders.DecoderPool(media_config(workers=1), tasks=TASKS)
    await pool.start()
    pids = pool.worker_pids
    async with Rendezvous(short_dir / "rv") as rv:
        running = asyncio.ensure_future(pool.run("hold", {"rendezvous": rv.path}))
        await rv.arrival()
        queued = asyncio.ensure_future(pool.run("echo", {}))
        started = time.monotonic()
        await pool.close()
        assert time.monotonic() - started < 5
    for task in (running, queued):
        with pytest.raises(decoders.DecoderClosedError):
            await task
    with pytest.raises(decoders.DecoderClosedError):
        await pool.run("echo", {})
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

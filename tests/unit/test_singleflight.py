"""SingleFlight: concurrent callers of one key share one run of the work and its outcome."""

from __future__ import annotations

import asyncio
import time

import pytest

from mediad import errors
from mediad.singleflight import SingleFlight


class Work:
    """Work that waits until released, counting how often it ran."""

    def __init__(self, value: str = "done", error: Exception | None = None) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.value, self.error = value, error

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.value


async def test_concurrent_callers_of_one_key_share_one_run() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    first = asyncio.create_task(flight.run("a", work))
    await work.started.wait()
    assert "a" in flight and "b" not in flight
    second = asyncio.create_task(flight.run("a", work))
    other = Work("other")
    other.release.set()
    assert await flight.run("b", other) == ("other", False)  # another key runs on its own
    work.release.set()
    assert await first == ("done", False)
    assert await second == ("done", True)
    assert work.runs == 1
    assert "a" not in flight  # forgotten once done: a later caller runs the work again
    assert await flight.run("a", work) == ("done", False) and work.runs == 2


async def test_the_works_exception_reaches_every_caller_sharing_it() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work(error=errors.PermanentError("bad bytes", error_code="corrupt_media"))
    first = asyncio.create_task(flight.run("a", work))
    await work.started.wait()
    second = asyncio.create_task(flight.run("a", work))
    await asyncio.sleep(0)  # one turn of the loop: the second caller is now waiting on the first
    work.release.set()
    for task in (first, second):
        with pytest.raises(errors.PermanentError, match="bad bytes"):
            await task
    assert work.runs == 1


async def test_a_cancelled_runner_gives_the_others_an_error_of_their_own() -> None:
    """The caller doing the work lost its lease: it is cancelled, the rows waiting on it are
    not; they get the `interrupted` error to retry on, and cancelling a waiter stops no work."""
    flight: SingleFlight[str, str] = SingleFlight(lambda: errors.TransientError("stopped"))
    work = Work()
    runner = asyncio.create_task(flight.run("a", work))
    await work.started.wait()
    waiter = asyncio.create_task(flight.run("a", work))
    impatient = asyncio.create_task(flight.run("a", work))
    await asyncio.sleep(0)  # one turn of the loop: both are now waiting on the runner
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert not runner.done()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    with pytest.raises(errors.TransientError, match="stopped"):
        await waiter


async def test_once_its_work_is_over_a_key_runs_again_unless_remembered() -> None:
    work = Work()
    work.release.set()
    forgetful: SingleFlight[str, str] = SingleFlight()
    assert await forgetful.run("a", work) == ("done", False)
    assert await forgetful.run("a", work) == ("done", False)
    assert work.runs == 2

    remembering: SingleFlight[str, str] = SingleFlight(remember=3600)
    again = Work()
    again.release.set()
    assert await remembering.run("a", again) == ("done", False)
    # The next row with the key, its outcome not written yet: the same value, shared.
    assert await remembering.run("a", again) == ("done", True)
    assert again.runs == 1


async def test_a_remembered_value_is_forgotten_when_its_time_is_up_and_errors_never_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    flight: SingleFlight[str, str] = SingleFlight(remember=60)
    work = Work()
    work.release.set()
    assert await flight.run("a", work) == ("done", False)
    now[0] += 59
    assert await flight.run("a", work) == ("done", True)
    now[0] += 2
    assert await flight.run("a", work) == ("done", False)
    assert work.runs == 2

    lasting: SingleFlight[str, str] = SingleFlight(remember=3600)
    failing = Work(error=errors.TransientError("the disk hiccuped"))
    failing.release.set()
    with pytest.raises(errors.TransientError):
        await lasting.run("b", failing)
    with pytest.raises(errors.TransientError):
        await lasting.run("b", failing)
    assert failing.runs == 2

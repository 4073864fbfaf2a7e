"""Single flight: rows that need the same work at the same time (the same URL fetched, the same
bytes analysed or derived) have it done once; the others wait for its outcome.

The first caller for a key does the work; a caller arriving while it runs gets the same value,
or the same exception. Once the work ends its key is forgotten, and what should outlive it (a
cache, the database) is the stage's business; but a stage whose rows learn of each other only
from the database can have a value `remember`ed a while: a row's outcome is written some time
after its work ends (the pool batches its writes), and a row arriving meanwhile would not find it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from mediad import errors

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


# The most values remembered at once: a stage's rows in flight are far fewer.
_REMEMBERED = 1024


def _interrupted() -> Exception:
    return errors.TransientError("interrupted")


class SingleFlight(Generic[K, V]):
    """Concurrent callers of `run` with the same key share one execution of its work."""

    def __init__(
        self, interrupted: Callable[[], Exception] = _interrupted, *, remember: float = 0.0
    ) -> None:
        # What the waiting callers get when the caller doing the work is cancelled or stopped
        # (its lease lost, the daemon stopping): their rows are not, so they get an error of
        # their own to retry on, never the CancelledError that is not theirs.
        self._interrupted = interrupted
        self._running: dict[K, asyncio.Future[V]] = {}
        # Values of work that succeeded in the last `remember` seconds (at most _REMEMBERED),
        # shared as the running work's are; errors are never remembered.
        self._remember = remember
        self._done: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __contains__(self, key: K) -> bool:
        """Whether the work for `key` is running now (a `run` would wait for it)."""
        return key in self._running

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """`work()`'s value, and whether it was another caller's (shared); its exception is
        raised to every caller sharing it."""
        shared = self._running.get(key)
        if shared is not None:
            # shield: this caller being cancelled must not cancel the work others wait for.
            return await asyncio.shield(shared), True
        done = self._recent(key)
        if done is not None:
            return done[1], True
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            value = await work()
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else self._interrupted())
            future.exception()  # retrieved: work nobody shared logs no "never retrieved"
            raise
        else:
            future.set_result(value)
            if self._remember > 0:
                self._done[key] = (time.monotonic() + self._remember, value)
                self._done.move_to_end(key)
                while len(self._done) > _REMEMBERED:
                    self._done.popitem(last=False)
        finally:
            del self._running[key]
        return value, False

    def _recent(self, key: K) -> tuple[float, V] | None:
        """The remembered value of `key`, if its time is not up; forgets those whose time is."""
        now = time.monotonic()
        while self._done:
            oldest = next(iter(self._done.values()))
            if oldest[0] > now:
                break
            self._done.popitem(last=False)
        return self._done.get(key)

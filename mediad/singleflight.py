"""Single flight: rows that need the same work at the same time (the same URL fetched, the same
bytes analysed or derived) have it done once; the others wait for its outcome.

The first caller for a key does the work; a caller arriving while it runs gets the same value,
or the same exception. Only concurrent callers share: once the work ends its key is forgotten,
and what should outlive it (a cache, the database) is the stage's business.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from mediad import errors

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _interrupted() -> Exception:
    return errors.TransientError("interrupted")


class SingleFlight(Generic[K, V]):
    """Concurrent callers of `run` with the same key share one execution of its work."""

    def __init__(self, interrupted: Callable[[], Exception] = _interrupted) -> None:
        # What the waiting callers get when the caller doing the work is cancelled or stopped
        # (its lease lost, the daemon stopping): their rows are not, so they get an error of
        # their own to retry on, never the CancelledError that is not theirs.
        self._interrupted = interrupted
        self._running: dict[K, asyncio.Future[V]] = {}

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
        finally:
            del self._running[key]
        return value, False

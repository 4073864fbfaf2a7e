"""Client-side limits held across the analysis pool: requests and tokens per minute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class PerMinute:
    """A token bucket refilled at `rate` per minute, holding at most a minute's worth; 0 means
    no limit. A request larger than the bucket waits for a full bucket and then goes alone."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._available = float(rate)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._available = min(self._rate, self._available + (now - self._stamp) * self._rate / 60)
        self._stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` may be spent (0: now)."""
        if self._rate <= 0:
            return 0.0
        self._refill()
        need = min(amount, self._rate)
        return max(need - self._available, 0.0) * 60 / self._rate

    async def take(self, amount: float) -> None:
        """Wait until `amount` may be spent, then spend it."""
        if self._rate <= 0:
            return
        async with self._lock:  # first come, first served
            while (wait := self.wait_for(amount)) > 0:  # noqa: ASYNC110 - time is the event
                await asyncio.sleep(wait)
            self._available -= amount

    def adjust(self, amount: float) -> None:
        """Settle an estimate: positive spends more, negative gives back."""
        if self._rate > 0:
            self._refill()
            self._available = min(self._rate, self._available - amount)

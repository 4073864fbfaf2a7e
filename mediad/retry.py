"""When a failed attempt is tried again: exponential backoff with jitter, honouring Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass

# A Retry-After beyond a day is more likely a bug at the origin than a real request.
_MAX_RETRY_AFTER = 86400.0


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds before the next attempt: half fixed, half random, never under Retry-After."""
        ceiling = min(self.cap, self.base * 2.0 ** max(attempt - 1, 0))
        # "Equal jitter": spreads a burst of failures without ever retrying immediately.
        delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, _MAX_RETRY_AFTER))
        return delay

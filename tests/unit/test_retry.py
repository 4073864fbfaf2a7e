"""The retry schedule: exponential, jittered, capped, and never under Retry-After."""

from __future__ import annotations

import random

from mediad.retry import Backoff


def test_delays_double_within_their_jitter_band() -> None:
    """Attempt n waits between half and all of base * 2**(n-1)."""
    backoff = Backoff(base=10.0, cap=3600.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0)]:
        for _ in range(50):
            assert ceiling / 2 <= backoff.delay(attempt, rng=rng) <= ceiling


def test_delays_are_capped() -> None:
    """No delay exceeds the cap, however many attempts."""
    backoff = Backoff(base=10.0, cap=60.0)
    assert all(backoff.delay(30) <= 60.0 for _ in range(50))


def test_jitter_spreads_retries() -> None:
    """Two rows failing together do not retry at the same instant."""
    backoff = Backoff(base=10.0, cap=3600.0)
    assert len({round(backoff.delay(3), 6) for _ in range(20)}) > 10


def test_retry_after_is_honoured() -> None:
    """A Retry-After longer than the backoff sets the delay."""
    backoff = Backoff(base=1.0, cap=3600.0)
    assert backoff.delay(1, retry_after=120.0) == 120.0
    assert backoff.delay(1, retry_after=10**9) == 86400.0

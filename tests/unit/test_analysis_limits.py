"""The client-side limits of the analysis pool: requests and tokens per minute."""

from __future__ import annotations

import pytest

from mediad.analysis.limits import PerMinute


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_full_minute_is_spent_at_once_then_the_rate_holds() -> None:
    """A bucket starts with a minute's worth; once spent, the next request waits 60/rate s,
    and time passing refills it at the rate."""
    clock = Clock()
    limit = PerMinute(120, clock=clock)
    for _ in range(120):
        await limit.take(1)
    assert limit.wait_for(1) == pytest.approx(0.5)
    clock.now = 0.25
    assert limit.wait_for(1) == pytest.approx(0.25)
    clock.now = 0.5
    assert limit.wait_for(1) == 0


async def test_tokens_are_settled_after_the_answer() -> None:
    """An estimate spent before a request is corrected by the usage the answer reports."""
    clock = Clock()
    limit = PerMinute(1000, clock=clock)
    await limit.take(900)
    assert limit.wait_for(200) == pytest.approx(100 * 60 / 1000)
    limit.adjust(-500)  # the answer used 400 tokens, not 900
    assert limit.wait_for(200) == 0


def test_a_request_larger_than_the_minute_waits_for_a_full_bucket() -> None:
    """More than a minute's worth at once goes when the bucket is full, rather than never."""
    limit = PerMinute(100, clock=Clock())
    assert limit.wait_for(250) == 0


def test_zero_means_no_limit() -> None:
    """A rate of 0 never waits."""
    assert PerMinute(0).wait_for(10**9) == 0

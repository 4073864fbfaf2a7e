"""A circuit breaker per host: after repeated failures a host is left alone for a while,
so one dead CDN does not burn every one of its rows' attempts."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _HostState:
    """One host's failures in a row, when its pause ends, and how many pauses in a row it had."""

    failures: int = 0
    open_until: float = 0.0
    trips: int = 0


class HostBreaker:
    """Counts consecutive transient failures per host and opens after `threshold` of them."""

    def __init__(
        self, threshold: int = 5, cooldown: float = 30.0, max_cooldown: float = 600.0
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._hosts: dict[str, _HostState] = {}

    def blocked_for(self, host: str) -> float:
        """Seconds the host is still left alone (0 when requests may go)."""
        state = self._hosts.get(host)
        if state is None:
            return 0.0
        return max(0.0, state.open_until - time.monotonic())

    def success(self, host: str) -> None:
        self._hosts.pop(host, None)

    def failure(self, host: str) -> bool:
        """Count one failure; True when this one opened the breaker."""
        state = self._hosts.setdefault(host, _HostState())
        if state.open_until > time.monotonic():
            # A fetch that began before the breaker opened: the same outage, not a new trip.
            return False
        state.failures += 1
        if state.failures < self.threshold:
            return False
        # Each trip in a row doubles the pause, up to the cap.
        pause = min(self.cooldown * 2**state.trips, self.max_cooldown)
        state.trips += 1
        state.failures = 0
        state.open_until = time.monotonic() + pause
        return True

"""Pausing a stage while a service it needs refuses to work as configured (bad credentials, an
unknown model, an exhausted quota, an access-denied bucket): said once, loudly, when it begins;
pauses doubling while it lasts; back to normal the moment the service answers."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from mediad import errors

log = structlog.get_logger(__name__)


class Outage:
    """One service's refusals, as pauses of the stage that uses it."""

    def __init__(
        self,
        service: str,
        base: float,
        cap: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._base, self._cap, self._clock = base, cap, clock
        self._pause = base
        self._resume_at = 0.0
        self.problem: str | None = None

    def refused(self, error_code: str, message: str, hint: str) -> errors.StagePausedError:
        """The service refuses us as configured: log it at error once while it lasts, and pause
        (doubling) rather than fail the row in hand."""
        if self.problem is None:
            self.problem = error_code
            log.error(f"{self._service}_refused", error_code=error_code, error=message, hint=hint)
        return self.pause(error_code, message)

    def pause(self, error_code: str, message: str) -> errors.StagePausedError:
        """The next pause of a doubling series (a pause already running is kept as it is)."""
        now = self._clock()
        if now < self._resume_at:
            # Another row hit the same wall: keep the pause already running.
            remaining = max(self._resume_at - now - 0.05, 0.0)
            return errors.StagePausedError(message, error_code=error_code, pause_for=remaining)
        seconds, self._pause = self._pause, min(self._pause * 2, self._cap)
        self._resume_at = now + seconds
        return errors.StagePausedError(message, error_code=error_code, pause_for=seconds)

    def ok(self) -> None:
        """The service answered as it should."""
        if self.problem is not None:
            log.warning(f"{self._service}_restored", previous=self.problem)
            self.problem = None
        self._pause = self._base

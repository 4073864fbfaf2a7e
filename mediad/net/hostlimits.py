"""What a download asks of a host before it fetches: one of `per_host_concurrency` slots, and
whether the host's circuit breaker lets it go.

`HostLimits` is what the download stage sees. `LocalHostLimits` holds them in this process;
with several worker processes (`daemon.processes`) each holds a `net.hostgate.GateClient`
instead, which asks the parent's one `HostSlots` and `HostBreaker` for the whole host.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from mediad.net.breaker import HostBreaker

Grant = Callable[[], None]


class HostLimits(Protocol):
    def slot(self, host: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while one fetch of `host` runs."""
        ...

    def blocked_for(self, host: str) -> float:
        """Seconds the host is still left alone by its breaker (0 when requests may go)."""
        ...

    def failure(self, host: str) -> bool:
        """Count one transient failure; True when this one opened the breaker."""
        ...

    def success(self, host: str) -> None: ...


class HostSlots:
    """`per_host` slots per host, granted first come, first served by calling the waiter's
    `grant`; a host's entry is dropped once nothing holds or waits for it. Callbacks rather
    than futures, so the parent's gate can grant a worker's request without a task each."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        # host -> [slots in use, waiters in order]
        self._hosts: dict[str, tuple[list[int], collections.deque[Grant]]] = {}

    def acquire(self, host: str, grant: Grant) -> bool:
        """True when granted at once (`grant` is not called); else `grant` is called later."""
        used, waiting = self._hosts.setdefault(host, ([0], collections.deque()))
        if used[0] < self.per_host:
            used[0] += 1
            return True
        waiting.append(grant)
        return False

    def cancel(self, host: str, grant: Grant) -> bool:
        """Withdraw a waiter; False when it was not waiting (it was granted meanwhile)."""
        entry = self._hosts.get(host)
        if entry is None or grant not in entry[1]:
            return False
        entry[1].remove(grant)
        return True

    def release(self, host: str) -> None:
        """Free one slot: the next waiter takes it over."""
        used, waiting = self._hosts[host]
        if waiting:
            waiting.popleft()()
            return
        used[0] -= 1
        if used[0] == 0:
            del self._hosts[host]

    def in_use(self, host: str) -> int:
        entry = self._hosts.get(host)
        return entry[0][0] if entry else 0


class LocalHostLimits:
    """The host limits of one process: its own slots and breaker."""

    def __init__(self, per_host: int, breaker: HostBreaker | None = None) -> None:
        self._slots = HostSlots(per_host)
        self._breaker = breaker or HostBreaker()

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        if not self._slots.acquire(host, granted := _Granted()):
            try:
                await granted.future
            except asyncio.CancelledError:
                if not self._slots.cancel(host, granted):
                    self._slots.release(host)  # granted as we were cancelled: hand it on
                raise
        try:
            yield
        finally:
            self._slots.release(host)

    def blocked_for(self, host: str) -> float:
        return self._breaker.blocked_for(host)

    def failure(self, host: str) -> bool:
        return self._breaker.failure(host)

    def success(self, host: str) -> None:
        self._breaker.success(host)


class _Granted:
    """A waiter's grant: resolves its future (made on the running loop)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __call__(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

"""Per-host limits shared by a host's worker processes: `per_host_concurrency` and the host
circuit breaker, held once, in the parent (mediad/supervisor.py), and asked over a unix socket.

Why a service in the parent rather than dividing the limit, POSIX semaphores or hosts hashed to
workers: a divided per-host limit is 0 in some process whenever it is below the process count
(and leaves a slot idle in one process while another queues for the same host); named
semaphores would need one per host, made and removed as hosts come and go, and a wait that
blocks a thread; hashing hosts to workers would make the claim statement filter by host. The
gate costs one small message each way per fetch (acquire, grant) and one more to release, on a
connection that stays open; a worker that dies has its slots freed as its connection closes.
When per_host_concurrency is at least download.concurrency (the host's, all processes
together), no host can ever have more fetches than that: the parent then says so on connecting,
and slots are taken without asking (the breaker is still the parent's).

The protocol is one line per message, the host last (a URL's host holds no space or newline):

    worker -> parent   A <id> <host>   acquire one slot       R <id>   release it (or withdraw)
                       F <host>        a transient failure    S <host> a success after failures
    parent -> worker   L <0|1>         first: whether per-host slots must be asked for at all
                       G <id>          granted
                       W <host>        the host has failures counting: report its next success
                       B <seconds> <host>   the breaker opened for that long (0: closed again)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import structlog

from mediad import errors
from mediad.net.breaker import HostBreaker
from mediad.net.hostlimits import Grant, HostSlots

log = structlog.get_logger(__name__)


class GateServer:
    """The parent's side: one HostSlots and one HostBreaker for every worker connected."""

    def __init__(
        self, per_host: int, breaker: HostBreaker | None = None, *, concurrency: int | None = None
    ) -> None:
        self.slots = HostSlots(per_host)
        # With `concurrency` (the host's download.concurrency) at most per_host, slots never bind.
        self.slots_bind = concurrency is None or per_host < concurrency
        self.breaker = breaker or HostBreaker()
        self._outboxes: set[_Outbox] = set()
        # Hosts with failures counting: a worker's success must then be reported to reset them.
        self._counting: set[str] = set()

    @contextlib.asynccontextmanager
    async def serving(self, path: str) -> AsyncIterator[None]:
        server = await asyncio.start_unix_server(self._serve, path)
        try:
            yield
        finally:
            server.close()
            for outbox in list(self._outboxes):
                outbox.writer.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outbox = _Outbox(writer)
        self._outboxes.add(outbox)
        outbox.put(f"L {int(self.slots_bind)}\n")
        held: dict[str, str] = {}  # id -> host
        waiting: dict[str, tuple[str, Grant]] = {}
        try:
            while line := await reader.readline():
                kind, _, rest = line.decode().rstrip("\n").partition(" ")
                if kind == "A":
                    ident, _, host = rest.partition(" ")
                    grant = self._granter(outbox, ident, host, held, waiting)
                    if self.slots.acquire(host, grant):
                        grant()
                    else:
                        waiting[ident] = (host, grant)
                elif kind == "R":
                    self._release(rest, held, waiting)
                elif kind == "F":
                    self._failure(rest)
                elif kind == "S":
                    self._success(rest)
        except (ConnectionError, UnicodeDecodeError, asyncio.IncompleteReadError):
            pass
        finally:
            # The worker is gone (or stopped): what it held or waited for is freed.
            for ident in list(waiting) + list(held):
                self._release(ident, held, waiting)
            self._outboxes.discard(outbox)
            writer.close()

    def _granter(
        self,
        outbox: _Outbox,
        ident: str,
        host: str,
        held: dict[str, str],
        waiting: dict[str, tuple[str, Grant]],
    ) -> Grant:
        def grant() -> None:
            waiting.pop(ident, None)
            held[ident] = host
            outbox.put(f"G {ident}\n")

        return grant

    def _release(
        self, ident: str, held: dict[str, str], waiting: dict[str, tuple[str, Grant]]
    ) -> None:
        if ident in waiting:
            host, grant = waiting.pop(ident)
            self.slots.cancel(host, grant)
        elif ident in held:
            self.slots.release(held.pop(ident))

    def _failure(self, host: str) -> None:
        if host not in self._counting:
            self._counting.add(host)
            self._broadcast(f"W {host}\n")
        if self.breaker.failure(host):
            seconds = self.breaker.blocked_for(host)
            log.warning("host_backing_off", host=host, seconds=round(seconds, 1))
            self._broadcast(f"B {seconds:.3f} {host}\n")

    def _success(self, host: str) -> None:
        blocked = self.breaker.blocked_for(host) > 0
        self.breaker.success(host)
        self._counting.discard(host)
        if blocked:
            self._broadcast(f"B 0 {host}\n")

    def _broadcast(self, message: str) -> None:
        for outbox in self._outboxes:
            outbox.put(message)


class GateClient:
    """A worker's side: the HostLimits the download stage uses, asked of the parent's gate."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slots_bind: bool
    ) -> None:
        self._reader = reader
        self._slots_bind = slots_bind
        self._writer = writer
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._blocked_until: dict[str, float] = {}
        self._counting: set[str] = set()
        self._outbox = _Outbox(writer)
        self._listener = asyncio.create_task(self._listen(), name="host-gate")

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, path: str) -> AsyncIterator[GateClient]:
        reader, writer = await asyncio.open_unix_connection(path)
        greeting = await reader.readline()
        if not greeting.startswith(b"L "):
            writer.close()
            raise ConnectionError(f"the host gate at {path} did not greet: {greeting[:40]!r}")
        client = cls(reader, writer, slots_bind=greeting.strip() != b"L 0")
        try:
            yield client
        finally:
            client._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client._listener
            writer.close()

    async def _listen(self) -> None:
        try:
            while line := await self._reader.readline():
                kind, _, rest = line.decode().rstrip("\n").partition(" ")
                if kind == "G":
                    future = self._waiting.pop(rest, None)
                    if future is not None and not future.done():
                        future.set_result(None)
                elif kind == "W":
                    self._counting.add(rest)
                elif kind == "B":
                    seconds, _, host = rest.partition(" ")
                    self._blocked_until[host] = time.monotonic() + float(seconds)
        except (ConnectionError, UnicodeDecodeError, ValueError) as exc:
            log.error("host_gate_lost", error=str(exc))
        finally:
            # The parent is gone (its link tells the worker to stop): nobody may fetch now.
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(_gate_lost())
            self._waiting.clear()

    def _send(self, message: str) -> None:
        if self._listener.done():
            raise _gate_lost()
        self._outbox.put(message)

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        if not self._slots_bind:
            yield
            return
        ident = str(next(self._ids))
        future = self._waiting[ident] = asyncio.get_running_loop().create_future()
        self._send(f"A {ident} {host}\n")
        try:
            await future
            yield
        finally:
            self._waiting.pop(ident, None)
            # Releases a held slot, or withdraws a request cancelled while it waited.
            with contextlib.suppress(errors.StagePausedError):
                self._send(f"R {ident}\n")

    def blocked_for(self, host: str) -> float:
        until = self._blocked_until.get(host)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked_until[host]
        return max(left, 0.0)

    def failure(self, host: str) -> bool:
        # The parent decides (and logs) when the breaker opens, for every process at once.
        self._send(f"F {host}\n")
        return False

    def success(self, host: str) -> None:
        if host in self._counting:
            self._counting.discard(host)
            self._blocked_until.pop(host, None)
            self._send(f"S {host}\n")


class _Outbox:
    """Lines to one peer, coalesced: those of one pass of the event loop go out in one send(),
    since each send() is a syscall and a wake-up of the other process."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._lines: list[str] = []

    def put(self, line: str) -> None:
        if not self._lines:
            asyncio.get_running_loop().call_soon(self._flush)
        self._lines.append(line)

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        if not self.writer.is_closing():
            self.writer.write("".join(lines).encode())


def _gate_lost() -> errors.StagePausedError:
    return errors.StagePausedError(
        "the parent's host gate is gone (the daemon is stopping)", error_code="host_gate_lost"
    )

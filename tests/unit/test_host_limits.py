"""Host-wide limits across worker processes: the shares of each process, and the parent's gate
(per-host slots and the breaker) asked by several clients over a real unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mediad import config, errors, shares
from mediad.net.breaker import HostBreaker
from mediad.net.hostgate import GateClient, GateServer
from tests.support import make_config


def test_shares_sum_to_the_host_limit_and_a_small_limit_runs_in_the_first_processes() -> None:
    cfg = make_config(
        download_concurrency="7",
        archive_concurrency="1",
        analysis_concurrency="4",
        analysis_requests_per_minute="2",
        media_workers="3",
        media_decode_memory="300",
        daemon_processes="3",
    )
    parts = [shares.for_process(cfg, i, 3) for i in range(3)]
    assert [p.download.concurrency for p in parts] == [3, 2, 2]
    assert [p.archive.concurrency for p in parts] == [1, 0, 0]
    # Two requests a minute can be split in two at most: analysis runs in two processes.
    assert [p.analysis.concurrency for p in parts] == [2, 2, 0]
    assert [p.analysis.requests_per_minute for p in parts[:2]] == [1, 1]
    assert [p.media.worker_count for p in parts] == [1, 1, 1]
    assert sum(p.media.decode_memory for p in parts) == 300
    assert all(p.daemon.process_count == 1 for p in parts)


def test_more_processes_than_any_stage_can_use_are_not_started() -> None:
    cfg = make_config(download_concurrency="2", derive_concurrency="1", daemon_processes="4",
                      media_workers="4")  # fmt: skip
    assert shares.useful_processes(cfg, ["download", "derive"]) == 2


def test_fewer_decoders_than_processes_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match=r"media\.workers"):
        make_config(daemon_processes="3", media_workers="2")


def test_unset_decoder_workers_follow_the_process_count(tmp_path: Path) -> None:
    # One process per core on a host of more cores than the default of 2 decoders: every
    # process still gets a decoder of its own, as with three processes named outright.
    cores = len(os.sched_getaffinity(0))
    for processes, expected in (("0", max(2, cores)), ("3", 3), ("1", 2)):
        cfg = make_config(daemon_processes=processes)
        assert cfg.media.worker_count == expected
        count = cfg.daemon.process_count
        assert all(shares.for_process(cfg, i, count).media.worker_count >= 1
                   for i in range(count))  # fmt: skip
    # The shipped config.toml leaves it unset, so raising processes there is enough.
    shipped = Path(__file__).resolve().parents[2] / "config.toml"
    assert config.load(shipped, env={"MEDIAD_DAEMON_PROCESSES": "3"}).media.worker_count == 3
    # Set in the config file rather than the environment, it is kept and checked all the same.
    path = tmp_path / "config.toml"
    path.write_text("[media]\nworkers = 2\n")
    with pytest.raises(errors.ConfigError, match=r"media\.workers: 2 decoder workers"):
        config.load(path, env={"MEDIAD_DAEMON_PROCESSES": "3"})


@contextlib.asynccontextmanager
async def _gate(
    tmp_path: Path, per_host: int, breaker: HostBreaker | None = None
) -> AsyncIterator[tuple[GateServer, GateClient, GateClient]]:
    path = str(tmp_path / "gate.sock")
    server = GateServer(per_host, breaker)
    async with (
        server.serving(path),
        GateClient.connected(path) as first,
        GateClient.connected(path) as second,
    ):
        yield server, first, second


async def test_per_host_slots_are_shared_by_every_client(tmp_path: Path) -> None:
    async with _gate(tmp_path, per_host=2) as (server, first, second):
        held = contextlib.AsyncExitStack()
        await held.enter_async_context(first.slot("cdn.example"))
        await held.enter_async_context(second.slot("cdn.example"))
        # A third fetch of the host, from either process, waits; another host does not.
        entered = asyncio.Event()
        waiting = asyncio.create_task(_hold(first, "cdn.example", entered))
        await _round_trip(first)  # the parent has read the waiting request, granted nothing
        assert server.slots.in_use("cdn.example") == 2
        assert not entered.is_set()
        await held.aclose()
        await asyncio.wait_for(waiting, timeout=5)
        assert entered.is_set()


async def _hold(client: GateClient, host: str, entered: asyncio.Event | None = None) -> None:
    async with client.slot(host):
        if entered is not None:
            entered.set()


async def _round_trip(client: GateClient) -> None:
    """A slot of a host nobody uses: once granted, the parent has read (and answered on this
    connection) everything the client sent before."""
    async with client.slot("round-trip.invalid"):
        pass


async def test_a_closed_client_frees_its_slots(tmp_path: Path) -> None:
    path = str(tmp_path / "gate.sock")
    async with GateServer(1).serving(path), GateClient.connected(path) as survivor:
        async with GateClient.connected(path) as dying:
            entered = asyncio.Event()

            async def hold_forever() -> None:
                async with dying.slot("cdn.example"):
                    entered.set()
                    await asyncio.Event().wait()

            holder = asyncio.create_task(hold_forever())
            await entered.wait()
        # The client went away while holding its slot (a worker killed): the slot is free.
        await asyncio.wait_for(_hold(survivor, "cdn.example"), timeout=5)
        holder.cancel()


async def test_failures_in_any_process_open_the_breaker_for_all(tmp_path: Path) -> None:
    breaker = HostBreaker(threshold=4)
    async with _gate(tmp_path, per_host=4, breaker=breaker) as (_, a, b):
        for client in (a, b, a, b):
            assert a.blocked_for("cdn.example") == 0
            client.failure("cdn.example")
        # The parent broadcasts before answering b, and answers a after that.
        await _round_trip(a)
        await _round_trip(b)
        await _round_trip(a)
        assert a.blocked_for("cdn.example") == pytest.approx(30, abs=1)
        assert b.blocked_for("cdn.example") == pytest.approx(30, abs=1)


async def test_a_success_in_one_process_resets_the_count_for_all(tmp_path: Path) -> None:
    breaker = HostBreaker(threshold=3)
    async with _gate(tmp_path, per_host=4, breaker=breaker) as (_, a, b):
        a.failure("cdn.example")
        a.failure("cdn.example")
        await _round_trip(a)
        await _round_trip(b)  # b has heard that failures are counting, so reports its success
        b.success("cdn.example")
        await _round_trip(b)
        a.failure("cdn.example")
        a.failure("cdn.example")
        await _round_trip(a)
        assert a.blocked_for("cdn.example") == 0
        a.failure("cdn.example")  # the third in a row since b's success
        await _round_trip(a)
        assert a.blocked_for("cdn.example") > 0


async def test_slots_are_not_asked_for_when_they_cannot_bind(tmp_path: Path) -> None:
    """per_host_concurrency at least the host's download.concurrency: no host can have more
    fetches than that, so a worker takes slots without a round trip."""
    path = str(tmp_path / "gate.sock")
    server = GateServer(2, concurrency=2)
    async with (
        server.serving(path),
        GateClient.connected(path) as client,
        client.slot("cdn.example"),
    ):
        assert server.slots.in_use("cdn.example") == 0  # the parent was never asked

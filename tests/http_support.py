"""Helpers for the HTTP endpoint's tests: the daemon serving http.listen on a free loopback port,
and /metrics read the way Prometheus reads it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mediad import daemon
from mediad.stage import Opener
from tests.nginx_support import free_port
from tests.support import make_config, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Served:
    """A daemon running with its endpoint at `base`, and a client session for it."""

    base: str
    session: aiohttp.ClientSession
    stop: asyncio.Event

    async def get(self, path: str, **headers: str) -> tuple[int, str]:
        async with self.session.get(self.base + path, headers=headers) as response:
            return response.status, await response.text()

    async def status(self, path: str) -> int:
        with contextlib.suppress(aiohttp.ClientError):
            return (await self.get(path))[0]
        return 0

    async def metrics(self, **headers: str) -> Samples:
        status, text = await self.get("/metrics", **headers)
        assert status == 200, text
        return parse(text)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def names(text: str) -> set[str]:
    """The metric families and sample names of an exposition (a labelled counter that never
    counted has its family, but no sample)."""
    found = set()
    for family in text_string_to_metric_families(text):
        found.add(family.name)
        found.update(sample.name for sample in family.samples)
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter never incremented has no labelled child)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextlib.asynccontextmanager
async def serving_daemon(
    db_url: str,
    settings: Mapping[str, str] | None = None,
    *,
    openers: Mapping[str, Opener] | None = None,
    host: str = "127.0.0.1",
    **overrides: str,
) -> AsyncIterator[Served]:
    """`mediad run` in the background with http.listen on a free port (row counts never
    cached) and `settings` and `overrides` (section_key=value), until the block ends."""
    port = free_port()
    endpoint = {"http_listen": f"{host}:{port}", "http_counts_max_age": "0s"}
    cfg = make_config(**(endpoint | dict(settings or {}) | overrides))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(cfg, url=db_url, openers=openers, stop=stop))
    async with aiohttp.ClientSession() as session:
        served = Served(f"http://127.0.0.1:{port}", session, stop)

        async def up() -> bool:
            if task.done():
                task.result()  # the daemon failed to start: say why
            return await served.status("/healthz") in (200, 401, 503)

        try:
            await wait_for(up, within=60)
            yield served
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=60)

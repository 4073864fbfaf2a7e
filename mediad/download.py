"""The download stage (placeholder until the fetcher lands)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from mediad.config import Config
from mediad.stage import Process, Stage


def make_stage(config: Config, process: Process) -> Stage:
    """The download stage around `process`; its completion opens or skips the later stages."""
    return Stage(
        name="download",
        process=process,
        concurrency=config.download.concurrency,
        max_attempts=config.download.max_attempts,
        complete_query="complete_download",
        complete_params=(not config.archive.enabled, not config.analysis.enabled),
    )


@contextlib.asynccontextmanager
async def open_stage(config: Config) -> AsyncIterator[Stage | None]:
    yield None

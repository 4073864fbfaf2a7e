"""The stages mediad runs; each factory opens what its stage needs for the daemon's life."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from mediad.config import Config
from mediad.stage import Stage
from mediad.stages import download


@contextlib.asynccontextmanager
async def _archive_stage(config: Config) -> AsyncIterator[Stage | None]:
    if not config.archive.enabled:
        yield None
        return
    # Imported only when archiving: aioboto3 and botocore take about 0.3 s to import, which
    # every `mediad run --once` would otherwise pay.
    from mediad.stages import archive

    async with archive.open_stage(config) as stage:
        yield stage


# A factory yields None when its stage is disabled in config.
FACTORIES: list[Callable[[Config], AbstractAsyncContextManager[Stage | None]]] = [
    download.open_stage,
    _archive_stage,
]

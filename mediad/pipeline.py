"""The stages mediad runs; each factory opens what its stage needs for the daemon's life."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from mediad import archive, download
from mediad.config import Config
from mediad.stage import Stage

# A factory yields None when its stage is disabled in config.
FACTORIES: list[Callable[[Config], AbstractAsyncContextManager[Stage | None]]] = [
    download.open_stage,
    archive.open_stage,
]

"""What a stage is: a name, a `process(row)` coroutine, its concurrency and its attempt limit.

The pool machinery (pool.py) does the rest: claiming, leases, retries and the event log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from mediad import queries


@dataclass(frozen=True)
class Row:
    """One claimed row, as a stage sees it; `attempt` counts from 1."""

    media_id: str
    attempt: int
    media_url: str
    media_type: str
    post_id: str | None = None
    platform: str | None = None
    variants: Any = None
    url_expires_at: datetime | None = None
    local_file_path: str | None = None
    md5_sum: str | None = None
    sha256_sum: str | None = None
    file_size: int | None = None
    mime_type: str | None = None
    archive_url: str | None = None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Row:
        return cls(**dict(record.items()))


@dataclass(frozen=True)
class Result:
    """What a finished row records: `columns` of post_media, and the details of its event."""

    columns: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


Process = Callable[[Row], Awaitable[Result]]


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline: how to process a row, and how many at once."""

    name: str
    process: Process
    concurrency: int
    max_attempts: int
    # The plain query recording a finished batch, and its parameters after the standard five
    # (media_ids, attempts, results, details, lease owner).
    complete_query: str
    complete_params: tuple[Any, ...] = ()
    # A stage that reads the local file claims only the rows stored on this node (another
    # host's store is not here); None claims any row.
    storage_node: str | None = None

    def __post_init__(self) -> None:
        if self.name not in queries.STAGES:
            raise ValueError(f"unknown stage {self.name!r}")
        if self.complete_query not in queries.plain():
            raise ValueError(f"stage {self.name!r}: no query {self.complete_query!r}")

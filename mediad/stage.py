"""What a stage is: its declaration (the facts the engine derives every statement from), the row
it claims, the result it records, and the running stage (a `process(row)` coroutine and limits).

The declarations of mediad's own stages are in `mediad/stages/__init__.py`; the pool machinery
(pool.py, queue.py) does the rest: claiming, leases, retries, skips and the event log.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediad.config import Config
    from mediad.resources import Resources


@dataclass(frozen=True)
class Row:
    """One claimed row, as a stage sees it; `attempt` counts from 1. A claim fills in the fields
    its stage declares and leaves the others None."""

    media_id: str
    attempt: int
    media_url: str | None = None
    media_type: str | None = None
    post_id: str | None = None
    platform: str | None = None
    variants: Any = None
    url_expires_at: datetime | None = None
    local_file_path: str | None = None
    hosted_url: str | None = None
    md5_sum: str | None = None
    sha256_sum: str | None = None
    file_size: int | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    metadata: Any = None
    archive_url: str | None = None
    # Why this stage's previous attempt failed, if it did.
    error_code: str | None = None


_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
ROW_FIELDS = frozenset(f.name for f in dataclasses.fields(Row)) - {"media_id", "attempt"}


@dataclass(frozen=True)
class Declaration:
    """One stage, declared once: the claim, completion, skip and requeue statements, the wake-up
    trigger, `status`, `retry --stage` and eviction's conditions all follow from these facts.

    Its bookkeeping columns are `{name}_attempts`, `{name}_lease_owner`,
    `{name}_lease_expires_at`, `{name}_next_attempt_at` and the generated `{name}_queued`
    (waiting or leased, and every stage it waits for completed), added by a migration.
    """

    name: str
    # The status column (not_started, started, completed, failed, skipped) and the prefix of
    # its events: {prefix}_started, _failed, _released, _deferred, _skipped.
    status_column: str
    event_prefix: str
    completed_event: str
    # Whether it is on, from the config, and what its skip events say when it is not.
    enabled: Callable[[Config], bool]
    disabled_reason: str
    # "module:function" opening the stage for the daemon's life (see Opener); None: this build
    # has no implementation, so enabling it is a config error.
    implementation: str | None
    waits_for: tuple[str, ...] = ()
    # A stage that reads the local file claims only the rows stored on this host's node.
    reads_local_file: bool = False
    # The statuses in which this stage lets a local file be evicted; empty: eviction does not
    # wait for it.
    evictable_when: tuple[str, ...] = ()
    # The row fields its claim returns, and the post_media columns its results may write.
    fields: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    # A timestamp column set to now() when a row completes.
    completed_at: str | None = None
    # The decoder tasks it runs (decoders.TASKS): the forkserver imports their modules for its
    # workers to share, and only those of the stages that are on.
    decoder_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # These names are spliced into SQL: only plain identifiers.
        for identifier in (self.name, self.status_column, *self.columns, self.completed_at or "x"):
            if not _IDENTIFIER.fullmatch(identifier):
                raise ValueError(f"stage {self.name!r}: {identifier!r} is not a plain identifier")
        if "'" in self.disabled_reason:
            raise ValueError(f"stage {self.name!r}: no quotes in disabled_reason")
        unknown = set(self.fields) - ROW_FIELDS
        if unknown:
            raise ValueError(f"stage {self.name!r}: no Row fields {sorted(unknown)}")
        if "metadata" in self.columns:
            raise ValueError(f"stage {self.name!r}: metadata is merged (Result.metadata)")

    def event(self, what: str) -> str:
        """The name of this stage's `what` event: started, failed, released, deferred, skipped."""
        return f"{self.event_prefix}_{what}"


@dataclass(frozen=True)
class Result:
    """What a finished row records: values of the stage's declared `columns` (a column not given
    keeps its value), keys merged into the row's `metadata`, and the details of its event."""

    columns: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


Process = Callable[[Row], Awaitable[Result]]


@dataclass(frozen=True)
class Stage:
    """A declared stage, running: how to process a row, how many at once, how many attempts."""

    declaration: Declaration
    process: Process
    concurrency: int
    max_attempts: int
    # Set for a stage that reads the local file: it claims only the rows stored on this node
    # (another host's store is not here); None claims any row.
    storage_node: str | None = None

    @property
    def name(self) -> str:
        return self.declaration.name

    @classmethod
    def configured(cls, declaration: Declaration, process: Process, config: Config) -> Stage:
        """The stage with the concurrency and attempts of its own config section."""
        section = getattr(config, declaration.name)
        return cls(
            declaration,
            process,
            concurrency=section.concurrency,
            max_attempts=section.max_attempts,
            storage_node=config.storage.node_name if declaration.reads_local_file else None,
        )


# Opens a stage for the daemon's life from what the daemon owns.
Opener = Callable[["Resources"], AbstractAsyncContextManager[Stage]]

"""The stages mediad runs, one declaration each; every module beside this one implements one.

Adding a stage: its module (an `open_stage(resources)` yielding a `Stage`), its entry here, and a
migration adding its bookkeeping columns (see `Declaration`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mediad.stage import Declaration, Opener

if TYPE_CHECKING:
    from mediad.config import Config

_FILE_FIELDS = ("local_file_path", "md5_sum", "sha256_sum", "file_size", "mime_type")

DOWNLOAD = Declaration(
    name="download",
    status_column="download_status",
    event_prefix="download",
    completed_event="media_downloaded",
    enabled=lambda config: True,
    disabled_reason="",
    implementation="mediad.stages.download:open_stage",
    evictable_when=("completed",),
    fields=(
        "post_id", "platform", "media_type", "media_url", "variants", "url_expires_at",
        "error_code",
    ),
    columns=(
        "local_file_path", "hosted_url", "md5_sum", "sha256_sum", "file_size", "mime_type",
        "width", "height", "duration_seconds", "url_expires_at", "storage_node",
    ),
    completed_at="downloaded_at",
    decoder_tasks=("image_header", "probe"),
)  # fmt: skip

ARCHIVE = Declaration(
    name="archive",
    status_column="archive_status",
    event_prefix="archive",
    completed_event="archive_completed",
    enabled=lambda config: config.archive.enabled,
    disabled_reason="archive.enabled is false",
    implementation="mediad.stages.archive:open_stage",
    waits_for=("download",),
    reads_local_file=True,
    evictable_when=("completed",),
    fields=("post_id", "platform", "media_type", *_FILE_FIELDS, "archive_url"),
    # A local file found gone is cleared from the row.
    columns=("archive_url", "local_file_path", "hosted_url"),
    completed_at="archived_at",
)

ANALYSIS = Declaration(
    name="analysis",
    status_column="ai_analysis_status",
    event_prefix="ai_analysis",
    completed_event="ai_analysis_completed",
    enabled=lambda config: config.analysis.enabled,
    disabled_reason="analysis.enabled is false",
    implementation="mediad.stages.analysis:open_stage",
    waits_for=("download",),
    # The local file, or the archived object once the local copy was evicted.
    reads_local_file=True,
    evictable_when=("completed", "failed", "skipped"),
    fields=("post_id", "media_type", *_FILE_FIELDS, "archive_url"),
    columns=("ai_analysis", "analysis_tokens", "analysis_cost_usd"),
    completed_at="ai_analyzed_at",
    decoder_tasks=("image_header", "jpegs", "analyze_local"),
)

DERIVE = Declaration(
    name="derive",
    status_column="derive_status",
    event_prefix="derive",
    completed_event="derivatives_created",
    enabled=lambda config: config.derive.enabled,
    disabled_reason="derive.enabled is false",
    implementation="mediad.stages.derive:open_stage",
    waits_for=("download",),
    # The local file, or the archived object once the local copy was evicted.
    reads_local_file=True,
    # Eviction frees originals only, and derive reads the original: it waits for derive.
    evictable_when=("completed", "failed", "skipped"),
    fields=(
        "post_id", "media_type", *_FILE_FIELDS, "hosted_url", "width", "height", "archive_url",
        "error_code",
    ),
    columns=("thumbnail_url", "derivatives"),
    completed_at="derived_at",
    decoder_tasks=("derive_header", "derive"),
)  # fmt: skip

ALL: tuple[Declaration, ...] = (DOWNLOAD, ARCHIVE, ANALYSIS, DERIVE)


def disabled(config: Config, registry: Sequence[Declaration] = ALL) -> frozenset[str]:
    """The names of the stages `config` turns off."""
    return frozenset(d.name for d in registry if not d.enabled(config))


def decoder_tasks(config: Config, registry: Sequence[Declaration] = ALL) -> frozenset[str]:
    """The decoder tasks the stages `config` turns on run."""
    return frozenset(task for d in registry if d.enabled(config) for task in d.decoder_tasks)


def named(name: str, registry: Sequence[Declaration] = ALL) -> Declaration:
    """The declaration called `name`."""
    for declaration in registry:
        if declaration.name == name:
            return declaration
    raise KeyError(name)


def opener(declaration: Declaration) -> Opener:
    """The function opening `declaration`'s stage, imported only now: a stage's libraries (the
    archive's aiobotocore, ~0.3 s) cost nothing while it is off."""
    if declaration.implementation is None:
        raise LookupError(f"this build has no {declaration.name} stage")
    module, _, function = declaration.implementation.partition(":")
    found: Opener = getattr(importlib.import_module(module), function)
    return found

"""Loads the named SQL blocks of `sql/queries.sql` and the numbered migrations.

A block starts with `-- name --` and a one-line description; blocks after the
`-- stage queries --` marker are templates expanded for each stage from STAGES.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass

_BLOCK = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)
_TOKEN = re.compile(r"\{(stage|status|started_event|failed_event|released_event)\}")


@dataclass(frozen=True)
class StageNames:
    """The columns and event names of one stage, as the table and the event log spell them."""

    stage: str
    status: str
    started_event: str
    failed_event: str
    released_event: str


STAGES: dict[str, StageNames] = {
    "download": StageNames(
        "download", "download_status", "download_started", "download_failed", "download_released"
    ),
    "archive": StageNames(
        "archive", "archive_status", "archive_started", "archive_failed", "archive_released"
    ),
    "analysis": StageNames(
        "analysis", "ai_analysis_status",
        "ai_analysis_started", "ai_analysis_failed", "ai_analysis_released",
    ),
}  # fmt: skip


def _read(name: str) -> str:
    return importlib.resources.files("mediad.sql").joinpath(name).read_text(encoding="utf-8")


def parse_blocks(text: str) -> dict[str, str]:
    """Split a file of `-- name --` blocks into {name: sql}, comment lines dropped."""
    blocks: dict[str, str] = {}
    matches = list(_BLOCK.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = "\n".join(
            line for line in text[match.end() : end].splitlines() if not line.startswith("--")
        ).strip()
        if body:
            if match.group(1) in blocks:
                raise ValueError(f"query {match.group(1)!r} is defined twice")
            blocks[match.group(1)] = body
    return blocks


def _split_templates(text: str) -> tuple[dict[str, str], dict[str, str]]:
    stage_part, _, plain_part = text.partition("-- plain queries --")
    _, _, stage_part = stage_part.partition("-- stage queries --")
    return parse_blocks(stage_part), parse_blocks(plain_part)


@functools.cache
def plain() -> dict[str, str]:
    """The plain (stage-independent) queries."""
    return _split_templates(_read("queries.sql"))[1]


@functools.cache
def for_stage(stage: str) -> dict[str, str]:
    """The stage templates filled in for `stage`."""
    names = STAGES[stage]
    templates = _split_templates(_read("queries.sql"))[0]
    return {
        name: _TOKEN.sub(lambda m: str(getattr(names, m.group(1))), body)
        for name, body in templates.items()
    }


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered migrations `NNNN_name.sql`, in order."""
    found = []
    for entry in importlib.resources.files("mediad.sql").iterdir():
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)

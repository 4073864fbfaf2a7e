"""Loads the named SQL blocks of `sql/queries.sql` and the numbered migrations, and fills in the
templates from the stage declarations.

A block starts with `-- name --` and a one-line description. Blocks after `-- stage queries --`
are one stage's statements; those after `-- fragments --` are the per-stage pieces that
statements over every stage join together; those after `-- plain queries --` stand alone, and
the ones holding a `{token}` get it from every declared stage.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mediad import stages
from mediad.stage import Declaration

_BLOCK = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)
_TOKEN = re.compile(r"\{([a-z_]+)\}")

Registry = Sequence[Declaration]


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


@dataclass(frozen=True)
class _Sections:
    stage: dict[str, str]
    fragments: dict[str, str]
    plain: dict[str, str]


@functools.cache
def _sections() -> _Sections:
    text = _read("queries.sql")
    head, _, plain_part = text.partition("-- plain queries --")
    stage_part, _, fragment_part = head.partition("-- fragments --")
    _, _, stage_part = stage_part.partition("-- stage queries --")
    return _Sections(
        parse_blocks(stage_part), parse_blocks(fragment_part), parse_blocks(plain_part)
    )


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `{token}` replaced; a token without a value is a bug, said at once."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"no value for {{{match.group(1)}}} in {template[:60]!r}")
        return values[match.group(1)]

    return _TOKEN.sub(value, template)


def _names(declaration: Declaration) -> dict[str, str]:
    """A stage's own tokens: its name, status column and event names."""
    return {
        "stage": declaration.name,
        "status": declaration.status_column,
        "completed_event": declaration.completed_event,
        "disabled_reason": declaration.disabled_reason,
        **{f"{what}_event": declaration.event(what) for what in _EVENTS},
    }


_EVENTS = ("started", "failed", "released", "deferred", "skipped")


def _fragment(name: str, declaration: Declaration, **extra: str) -> str:
    return fill(_sections().fragments[name], {**_names(declaration), **extra})


def _opened_by(declaration: Declaration, registry: Registry) -> list[tuple[Declaration, str]]:
    """The stages a completion of `declaration` may open, each with the SQL (" AND ...") saying
    that its other prerequisites are done."""
    opened = []
    for later in registry:
        if declaration.name in later.waits_for:
            others = "".join(
                f" AND p.{stages.named(name, registry).status_column} = 'completed'"
                for name in later.waits_for
                if name != declaration.name
            )
            opened.append((later, others))
    return opened


@functools.cache
def for_stage(
    declaration: Declaration,
    registry: Registry = stages.ALL,
    disabled: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The statements of one stage of `registry`; completions skip the `disabled` stages they
    open."""
    skipped = [(s, ready) for s, ready in _opened_by(declaration, registry) if s.name in disabled]
    columns = [_fragment("result_column", declaration, column=c) for c in declaration.columns]
    if declaration.completed_at is not None:
        columns.append(f"{declaration.completed_at} = now()")
    columns += [_fragment("skip_opened", s, ready=ready) for s, ready in skipped]
    values = {
        **_names(declaration),
        "due": _fragment("due", declaration),
        "returning": "".join(f", p.{name}" for name in declaration.fields),
        "completion_columns": "".join(f"\n    {c}," for c in columns),
        "trouble_elsewhere": " OR ".join(
            _fragment("in_trouble", other) for other in registry if other is not declaration
        )
        or "false",
        "skip_events": "".join(
            "\n        || " + _fragment("skip_opened_event", s, ready=ready) for s, ready in skipped
        ),
    }
    return {name: fill(body, values) for name, body in _sections().stage.items()}


@functools.cache
def plain(registry: Registry = stages.ALL) -> dict[str, str]:
    """The queries that stand alone, those over every stage assembled from `registry`."""
    evicting = [d for d in registry if d.evictable_when]
    values = {
        "count_keys": ", ".join(_fragment("count_key", d) for d in registry),
        "queue_counts": "\nUNION ALL\n".join(
            _fragment("queue_count", d, due=_fragment("due", d)) for d in registry
        ),
        "evictable": " AND ".join(
            _fragment(
                "evictable", d, evictable_statuses=", ".join(f"'{s}'" for s in d.evictable_when)
            )
            for d in evicting
        ),
        "made_due_inserted": ",\n            ".join(
            _fragment("made_due", d, waiting=_fragment("waiting", d), was_due="false")
            for d in registry
        ),
        "made_due_updated": ",\n            ".join(
            _fragment(
                "made_due", d, waiting=_fragment("waiting", d), was_due=_fragment("was_due", d)
            )
            for d in registry
        ),
        "any_waiting": " OR ".join(_fragment("waiting", d) for d in registry),
        "notify_stages": "\n    ".join(_fragment("notify_stage", d) for d in registry),
        "status_columns": ", ".join(d.status_column for d in registry),
        "failed_in_stage": "CASE $2::text "
        + " ".join(f"WHEN '{d.name}' THEN {d.status_column} = 'failed'" for d in registry)
        + " ELSE false END",
    }
    return {name: fill(body, values) for name, body in _sections().plain.items()}


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

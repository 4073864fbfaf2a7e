"""The SQL loader: every named query is well formed, filled in per stage, and used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mediad import queries

MEDIAD = Path(__file__).resolve().parents[2] / "mediad"


def python_source() -> str:
    return "\n".join(p.read_text() for p in MEDIAD.rglob("*.py"))


def test_blocks_split_with_descriptions_dropped() -> None:
    """A file of `-- name --` blocks becomes {name: sql} without the comment lines."""
    text = "-- one --\n-- first query\nSELECT 1;\n\n-- two --\n-- second\nSELECT\n  2;\n"
    assert queries.parse_blocks(text) == {"one": "SELECT 1;", "two": "SELECT\n  2;"}


def test_duplicate_names_are_refused() -> None:
    """Two blocks with one name are an error, not a silent overwrite."""
    with pytest.raises(ValueError, match="twice"):
        queries.parse_blocks("-- a --\nSELECT 1;\n-- a --\nSELECT 2;\n")


@pytest.mark.parametrize("stage", list(queries.STAGES))
def test_stage_templates_are_fully_filled(stage: str) -> None:
    """No placeholder survives in a stage's queries, and each names its own columns."""
    filled = queries.for_stage(stage)
    assert {"claim", "heartbeat", "release", "retry", "fail", "count_due", "requeue"} <= set(filled)
    names = queries.STAGES[stage]
    for sql in filled.values():
        assert not re.search(r"\{[a-z_]+\}", sql)
    assert names.status in filled["claim"]
    assert f"{stage}_lease_owner" in filled["claim"]


def test_every_query_is_used() -> None:
    """Each named query is referenced from the code, so none rots unseen."""
    source = python_source()
    for name in [*queries.plain(), *queries.for_stage("download")]:
        assert f'"{name}"' in source or f"'{name}'" in source, f"query {name!r} is never used"


def test_migrations_are_numbered_in_order() -> None:
    """Migrations load in version order and include the table's creation."""
    found = queries.migrations()
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[0].name == "post_media"
    assert "CREATE TABLE IF NOT EXISTS post_media" in found[0].sql

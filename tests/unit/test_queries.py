"""The SQL loader: every named query is well formed, filled in per stage, and used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mediad import migrate, queries, stages
from mediad.stage import Declaration

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


@pytest.mark.parametrize("declaration", stages.ALL, ids=lambda d: d.name)
def test_stage_templates_are_fully_filled(declaration: Declaration) -> None:
    """No placeholder survives in a stage's queries, and each names its own columns."""
    filled = queries.for_stage(declaration)
    assert {"claim", "heartbeat", "release", "retry", "fail", "count_due", "requeue"} <= set(filled)
    for sql in filled.values():
        assert not re.search(r"\{[a-z_]+\}", sql)
    assert declaration.status_column in filled["claim"]
    assert f"{declaration.name}_lease_owner" in filled["claim"]


def test_every_query_is_used() -> None:
    """Each named query and fragment has a call site in mediad (a subscript `["name"]`, or the
    fragment helper), so none rots unseen; a log event or command of the same name does not
    count."""
    source = python_source()
    called = set(re.findall(r'\[\s*"([a-z_]+)"\s*\]', source)) | set(migrate._DERIVED)
    for name in [*queries.plain(), *queries.for_stage(stages.DOWNLOAD)]:
        assert name in called, f"query {name!r} is never used"
    fragments = set(re.findall(r'_fragment\(\s*"([a-z_]+)"', source))
    for name in queries._sections().fragments:
        assert name in fragments, f"fragment {name!r} is never used"


def test_migrations_are_numbered_in_order() -> None:
    """Every .sql file beside queries.sql is a migration named NNNN_name.sql, numbered from 1
    without a gap or a repeat, the first creating the table."""
    files = sorted(p.name for p in (MEDIAD.parent / "sql").glob("*.sql") if p.name != "queries.sql")
    found = queries.migrations()
    assert [f"{m.version:04d}_{m.name}.sql" for m in found] == files
    assert [m.version for m in found] == list(range(1, len(files) + 1))
    assert found[0].name == "post_media"
    assert "CREATE TABLE IF NOT EXISTS post_media" in found[0].sql

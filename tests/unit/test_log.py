"""Log set-up: every record, the libraries' included, comes out as one JSON line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediad import errors
from mediad.media import probe
from tests import media, support


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """JSON logs into a buffer; the root logger and warnings are restored afterwards."""
    with support.captured_log("json") as stream:
        yield stream


def test_a_library_warning_is_a_json_line(json_log: io.StringIO, tmp_path: Path) -> None:
    """Pillow warns of a picture over its pixel bound (a decompression bomb) as it opens it,
    before mediad refuses it; the warning is a log record like any other, not raw text on
    stderr between the JSON lines."""
    body = media.png_claiming_size(15_000, 12_000)  # over Pillow's bound, under twice it
    path = tmp_path / "bomb.png"
    path.write_bytes(body)

    with pytest.raises(errors.MediaTooLargeError):
        probe.probe_file(path, data=body)

    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert records, "Pillow's warning was not logged"
    assert {(r["level"], r["logger"]) for r in records} == {("warning", "py.warnings")}
    assert any("DecompressionBombWarning" in r["event"] for r in records)

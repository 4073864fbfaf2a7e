"""Log set-up: every record, the libraries' included, comes out as one JSON line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediad.media import probe
from tests import media, support


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """JSON logs into a buffer; the root logger and warnings are restored afterwards."""
    with support.captured_log("json") as stream:
        yield stream


def _with_damaged_exif() -> bytes:
    """A camera JPEG whose IFD0 claims far more entries than its EXIF block holds."""
    data = bytearray(media.jpeg_with_exif(64, 48))
    tiff = data.index(b"Exif\x00\x00") + 6
    big_endian = data[tiff : tiff + 2] == b"MM"
    ifd0 = tiff + int.from_bytes(data[tiff + 4 : tiff + 8], "big" if big_endian else "little")
    data[ifd0 : ifd0 + 2] = (0x0FFF).to_bytes(2, "big" if big_endian else "little")
    return bytes(data)


def test_a_library_warning_is_a_json_line(json_log: io.StringIO, tmp_path: Path) -> None:
    """Pillow warns while mediad reads a damaged EXIF block; the warning is a log record like
    any other, not raw text on stderr between the JSON lines."""
    body = _with_damaged_exif()
    path = tmp_path / "damaged-exif.jpg"
    path.write_bytes(body)

    probe.probe_file(path, data=body)

    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert records, "Pillow's warning was not logged"
    assert {(r["level"], r["logger"]) for r in records} == {("warning", "py.warnings")}
    assert any("EXIF" in r["event"] for r in records)

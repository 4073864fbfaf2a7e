"""The PNG chunk walk, on real PNGs and APNGs made by Pillow and on the ways they are damaged."""

from __future__ import annotations

import contextlib
import io
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from mediad.media import png
from tests import media


def _pillow_frames(data: bytes) -> int | None:
    """How many frames Pillow decodes from `data`, seeking to each; None if it refuses one."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            frames = int(getattr(img, "n_frames", 1))
            for frame in range(frames):
                img.seek(frame)
                img.load()
    except (OSError, SyntaxError, ValueError, EOFError):
        return None
    return frames


def _chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """Each chunk of a PNG Pillow wrote: its type, where it starts and where it ends."""
    found, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        found.append((kind, position, position + 12 + length))
        position += 12 + length
    return found


def _chunk(kind: bytes, body: bytes) -> bytes:
    """A chunk as a PNG encoder writes it: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _replace(data: bytes, start: int, end: int, by: bytes) -> bytes:
    return data[:start] + by + data[end:]


def _with_actl_count(data: bytes, frames: int) -> bytes:
    """The APNG `data` with acTL declaring `frames` frames (and its CRC made to match)."""
    ((_, start, end),) = [chunk for chunk in _chunks(data) if chunk[0] == b"acTL"]
    plays = data[start + 12 : start + 16]
    return _replace(data, start, end, _chunk(b"acTL", struct.pack(">I", frames) + plays))


def _text_info() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by mediad's tests")
    info.add_text("Description", "compressed " * 20, zip=True)
    return info


def _still(mode: str, **save: object) -> bytes:
    """A still PNG of noise in `mode`, written by Pillow with `save`."""
    buf = io.BytesIO()
    media.noise_image(48, 32, seed=4).convert(mode).save(buf, "PNG", **save)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda: media.png(40, 30),
        lambda: _still("RGBA"),
        lambda: _still("L", optimize=True),
        lambda: _still("I;16"),
        lambda: _still("P"),
        lambda: _still("1"),
        lambda: _still("RGB", pnginfo=_text_info()),
    ],
    ids=["rgb", "rgba", "grey-optimized", "16-bit", "palette", "1-bit", "text-chunks"],
)
def test_real_still_pngs_are_whole(make: Callable[[], bytes]) -> None:
    """Every kind of still PNG Pillow writes is whole: one frame."""
    assert png.check_structure(make()) == 1


@pytest.mark.parametrize(
    "save",
    [{}, {"default_image": True}, {"disposal": 1, "blend": 1}, {"mode": "RGBA", "disposal": 2}],
    ids=["frames", "default-image", "dispose-to-background-blend-over", "rgba-dispose-previous"],
)
def test_real_apngs_are_whole(save: dict[str, Any]) -> None:
    """Every kind of APNG Pillow writes is whole, with as many frames as Pillow decodes."""
    data = media.apng(5, **save)

    assert png.check_structure(data) == _pillow_frames(data) == 5


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_an_apng_cut_anywhere_is_damaged(fraction: float) -> None:
    """A body cut short ends inside a chunk, or between two, before IEND."""
    data = media.apng(6)

    with pytest.raises(png.PngStructureError, match=r"ends at byte|runs past its end"):
        png.check_structure(data[: int(len(data) * fraction)])


def test_a_missing_iend_checksum_is_damage() -> None:
    """The last four bytes (IEND's CRC) are the end of the file; without them it was cut."""
    with pytest.raises(png.PngStructureError, match="without an IEND chunk"):
        png.check_structure(media.png()[:-4])


def test_a_flipped_byte_breaks_its_chunks_crc() -> None:
    """One byte changed in the image data is a CRC that no longer matches."""
    data = bytearray(media.apng(3))
    ((_, start, end),) = [chunk for chunk in _chunks(bytes(data)) if chunk[0] == b"IDAT"][:1]
    data[(start + end) // 2] ^= 0x40

    with pytest.raises(png.PngStructureError, match=r"\(IDAT\) with a bad CRC"):
        png.check_structure(bytes(data))


def test_a_lost_frame_breaks_the_sequence() -> None:
    """An APNG missing one frame's chunks (fcTL and fdAT) skips sequence numbers: Pillow refuses
    it on reaching that frame, the walk without decoding one."""
    data = media.apng(5)
    controls = [chunk for chunk in _chunks(data) if chunk[0] == b"fcTL"]
    lost = _replace(data, controls[2][1], controls[3][1], b"")

    assert _pillow_frames(lost) is None
    with pytest.raises(png.PngStructureError, match=r"\(fcTL\) out of sequence"):
        png.check_structure(lost)


def test_frames_out_of_order_break_the_sequence() -> None:
    """Two frames swapped: their chunks are whole, their sequence numbers are not in order."""
    data = media.apng(4)
    controls = [start for kind, start, _ in _chunks(data) if kind == b"fcTL"]
    second, third = data[controls[1] : controls[2]], data[controls[2] : controls[3]]
    swapped = data[: controls[1]] + third + second + data[controls[3] :]

    assert _pillow_frames(swapped) is None
    with pytest.raises(png.PngStructureError, match="out of sequence"):
        png.check_structure(swapped)


def test_fewer_frames_than_declared_is_damage() -> None:
    """acTL declaring a frame more than the file holds: Pillow fails seeking to the last."""
    data = _with_actl_count(media.apng(4), 5)

    assert _pillow_frames(data) is None
    with pytest.raises(png.PngStructureError, match=r"declares 5 frames .* holds 4"):
        png.check_structure(data)


def test_more_frames_than_declared_shows_the_declared() -> None:
    """acTL declaring fewer frames than the file holds: Pillow shows the declared frames and
    leaves the others, so the file is whole with that many."""
    data = _with_actl_count(media.apng(4), 3)

    assert png.check_structure(data) == _pillow_frames(data) == 3


def test_a_frame_without_data_is_damage() -> None:
    """A frame control followed straight by the next one: the frame's data was lost."""
    data = media.apng(4)
    ((_, start, end),) = [chunk for chunk in _chunks(data) if chunk[0] == b"fdAT"][1:2]
    # Renumbered so that only the missing data is wrong, not the sequence.
    renumbered = _replace(data, start, end, b"")
    renumbered = _renumber(renumbered)

    assert _pillow_frames(renumbered) is None
    with pytest.raises(png.PngStructureError, match="without data"):
        png.check_structure(renumbered)


def _renumber(data: bytes) -> bytes:
    """The APNG `data` with its fcTL and fdAT numbered 0, 1, 2... again (CRCs to match)."""
    out, sequence = data[:8], 0
    for kind, start, end in _chunks(data):
        if kind in (b"fcTL", b"fdAT"):
            body = struct.pack(">I", sequence) + data[start + 12 : end - 4]
            out += _chunk(kind, body)
            sequence += 1
        else:
            out += data[start:end]
    return out


def test_what_follows_iend_is_not_read() -> None:
    """Bytes after IEND (an appended trailer, a second file) do not make a PNG damaged."""
    assert png.check_structure(media.apng(3) + random.Random(1).randbytes(4000)) == 3


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no PNG signature"),
        (b"GIF89a", "no PNG signature"),
        (media.png()[:8], "without an IEND chunk"),
        (media.png()[:8] + _chunk(b"IEND", b""), "does not start with an image header"),
        (media.png()[:33] + _chunk(b"IEND", b""), "holds no image data"),
    ],
    ids=["empty", "gif", "only-signature", "no-header", "no-image-data"],
)
def test_malformed_pngs_are_named(body: bytes, reason: str) -> None:
    """Bodies that start as no PNG, or hold no image, say so."""
    with pytest.raises(png.PngStructureError, match=reason):
        png.check_structure(body)


def test_any_damage_raises_only_the_structure_error() -> None:
    """Random bytes overwritten and random cuts never escape as IndexError or the like."""
    rng = random.Random(9)
    originals = [media.apng(3, 32, 24), media.png(32, 24)]
    for round_ in range(1500):
        data = bytearray(originals[round_ % len(originals)])
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        del data[rng.randrange(1, len(data) + 1) :]
        with contextlib.suppress(png.PngStructureError):
            png.check_structure(bytes(data))

"""The GIF structure walk, on real GIFs made by Pillow and on the ways a download damages them."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable

import pytest
from PIL import Image

from mediad.media import gif
from tests import media


def _frames_pillow_opens(data: bytes) -> int:
    """How many frames Pillow finds in `data` (it reads the end of the bytes as the trailer)."""
    with Image.open(io.BytesIO(data), formats=["GIF"]) as img:
        return int(getattr(img, "n_frames", 1))


def _decodes_every_frame(data: bytes) -> bool:
    """Whether Pillow decodes every frame of `data`."""
    try:
        with Image.open(io.BytesIO(data), formats=["GIF"]) as img:
            for frame in range(int(getattr(img, "n_frames", 1))):
                img.seek(frame)
                img.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def _screen(data: bytes) -> bytes:
    """A GIF's header, logical screen descriptor and global colour table: all before its blocks."""
    return data[: 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)]


def _image_descriptors(data: bytes) -> list[int]:
    """Where each image descriptor of a GIF Pillow wrote starts (found by walking its blocks)."""
    found = []
    position = len(_screen(data))
    while data[position] != 0x3B:
        if data[position] == 0x2C:
            found.append(position)
            flags = data[position + 9]
            position += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    return found


@pytest.mark.parametrize(
    "make",
    [
        lambda: media.animated_gif(1),
        lambda: media.animated_gif(5),
        lambda: media.animated_gif(3, interlace=False),
        lambda: media.animated_gif(3, comment=b"made by mediad's tests"),
        lambda: media.animated_gif(3, transparency=0, disposal=2),
        lambda: media.animated_gif(2, 300, 200),
    ],
    ids=["still", "animated", "not-interlaced", "comment", "disposal", "many-sub-blocks"],
)
def test_real_gifs_are_whole(make: Callable[[], bytes]) -> None:
    """Every kind of GIF Pillow writes is whole, with as many frames as Pillow counts."""
    data = make()

    frames = gif.check_structure(data)

    assert frames.count == _frames_pillow_opens(data)
    with Image.open(io.BytesIO(data)) as img:
        assert (frames.width, frames.height) == img.size


def test_local_colour_tables_are_stepped_over() -> None:
    """Frames with a colour table of their own (Pillow writes one for each frame after the
    first) walk intact."""
    data = media.animated_gif(4)
    assert all(data[at + 9] & 0x80 for at in _image_descriptors(data)[1:])

    assert gif.check_structure(data).count == 4


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_a_gif_cut_anywhere_is_damaged(fraction: float) -> None:
    """A body cut short ends inside a block, or between two: Pillow opens it with the frames it
    finds; the walk finds no trailer."""
    data = media.animated_gif(8)
    cut = data[: int(len(data) * fraction)]

    with pytest.raises(gif.GifStructureError, match="ends at byte"):
        gif.check_structure(cut)


def test_a_gif_cut_between_frames_is_damage_pillow_misses() -> None:
    """Cut just before a frame, a GIF is one Pillow opens as a shorter animation, whole to it;
    the walk finds no trailer."""
    data = media.animated_gif(6)
    cut = data[: _image_descriptors(data)[4] - 8]  # before frame 5's graphic control extension

    assert _frames_pillow_opens(cut) == 4
    with pytest.raises(gif.GifStructureError, match="without its trailer"):
        gif.check_structure(cut)


def test_a_missing_trailer_is_damage() -> None:
    """The trailer is the only proof that the last frame was the last."""
    with pytest.raises(gif.GifStructureError, match="without its trailer"):
        gif.check_structure(media.animated_gif(3)[:-1])


def test_a_zeroed_tail_is_damage() -> None:
    """A body whose last third never arrived but was zero-filled: Pillow opens it, the walk
    steps over the zeros and finds no trailer."""
    data = bytearray(media.animated_gif(9))
    third = len(data) // 3
    data[-third:] = bytes(third)

    assert _frames_pillow_opens(bytes(data)) >= 5
    with pytest.raises(gif.GifStructureError, match="ends at byte"):
        gif.check_structure(bytes(data))


def test_stray_bytes_between_blocks_are_stepped_over() -> None:
    """Bytes between two blocks that start none (a stray empty sub-block, another GIF's header):
    Pillow steps over them and decodes every frame; so does the walk."""
    data = media.animated_gif(3)
    second = _image_descriptors(data)[1] - 8
    stray = data[:second] + b"\x00\x00GIF89a" + data[second:]

    assert _decodes_every_frame(stray)
    assert gif.check_structure(stray).count == 3


def test_what_follows_the_trailer_is_not_read() -> None:
    """Bytes after the trailer (an appended page, a second file) do not make a GIF damaged."""
    data = media.animated_gif(3) + random.Random(1).randbytes(4000)

    assert gif.check_structure(data).count == 3


def test_a_later_frame_pillow_cannot_decode_is_damage() -> None:
    """An LZW code size over 12 bits in the last frame: Pillow refuses that frame when it gets
    there; the walk refuses the file without decoding a frame."""
    data = bytearray(media.animated_gif(4))
    last = _image_descriptors(bytes(data))[-1]
    flags = data[last + 9]
    data[last + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)] = 13  # after its colours

    assert not _decodes_every_frame(bytes(data))
    with pytest.raises(gif.GifStructureError, match="LZW code size of 13"):
        gif.check_structure(bytes(data))


def test_a_frame_drawn_past_the_screen_widens_the_canvas() -> None:
    """A frame placed past the screen's edge makes Pillow widen the picture: the walk reports
    that canvas, so the pixel bound applies to what a decode would allocate."""
    data = bytearray(media.animated_gif(3, 64, 48))
    last = _image_descriptors(bytes(data))[-1]
    data[last + 1 : last + 5] = (1000).to_bytes(2, "little") + (700).to_bytes(2, "little")

    frames = gif.check_structure(bytes(data))

    assert (frames.count, frames.width, frames.height) == (3, 1064, 748)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no GIF header"),
        (b"GIF89a", "no GIF header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "no GIF header"),
        (_screen(media.animated_gif(1)), "without its trailer"),
        (_screen(media.animated_gif(1)) + b"\x3b", "trailer before any image"),
    ],
    ids=["empty", "only-signature", "png", "only-screen", "no-image"],
)
def test_malformed_gifs_are_named(body: bytes, reason: str) -> None:
    """Bodies that start as no GIF, or hold no image, say so."""
    with pytest.raises(gif.GifStructureError, match=reason):
        gif.check_structure(body)


def test_any_damage_raises_only_the_structure_error() -> None:
    """Random bytes overwritten and random cuts never escape as IndexError or the like."""
    rng = random.Random(9)
    originals = [media.animated_gif(3), media.animated_gif(2, 100, 80)]
    for round_ in range(1500):
        data = bytearray(originals[round_ % len(originals)])
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        del data[rng.randrange(1, len(data) + 1) :]
        with contextlib.suppress(gif.GifStructureError):
            gif.check_structure(bytes(data))

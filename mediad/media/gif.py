"""Is a GIF whole? Its block structure walked from the header to the trailer, no frame decoded.

Pillow is a poor judge of a GIF's completeness: it takes the end of the bytes for the trailer,
so a GIF cut anywhere opens as one of fewer frames. Decoding every frame would not tell either,
and costs some thirty times the walk (0.8 s for 3,000 frames of 64x64). The walk checks, in one
pass over the bytes, what Pillow reads of them, and that they end as a GIF ends:

- the header (GIF87a or GIF89a), the logical screen descriptor and its global colour table;
- each extension (its label, then data sub-blocks up to the empty one that ends them) and each
  image (its descriptor, local colour table, LZW code size, then its data sub-blocks); bytes
  between blocks that start neither are stepped over, as Pillow does;
- the trailer (0x3B) after the last block; anything after it is not read.

The first frame is decoded too (images.py), which proves its LZW data; what only decoding the
others would catch is their LZW data damaged in place, which a download, failing at the end,
does not cause.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass

from mediad import errors

_HEADERS = (b"GIF87a", b"GIF89a")
_EXTENSION = 0x21
_IMAGE = 0x2C
_TRAILER = 0x3B
# Pillow's LZW decoder refuses a code size over 12 bits (the format's largest code).
_MAX_CODE_SIZE = 12
_SCREEN = struct.Struct("<HH")  # its width and height
_DESCRIPTOR = struct.Struct("<HHHHB")  # an image's left, top, width, height and flags
_FULL_SUB_BLOCK = 256  # its length byte, then 255 bytes
_BLOCK_START = re.compile(rb"[\x21\x2c\x3b]")


class GifStructureError(errors.MediadError):
    """The bytes start as a GIF but are not a whole, well-formed one; the message says where."""


@dataclass(frozen=True)
class Frames:
    """A walked GIF's frames: how many, and the canvas they need (Pillow widens the screen to a
    frame drawn past its edge, so the pixel bound applies to this, not the screen)."""

    count: int
    width: int
    height: int


def check_structure(data: bytes | mmap.mmap) -> Frames:
    """The frames of `data`; GifStructureError unless it is a GIF walked intact."""
    size = len(data)
    if size < 13 or data[:6] not in _HEADERS:
        raise GifStructureError("has no GIF header")
    width, height = _SCREEN.unpack_from(data, 6)
    position = _after_colour_table(13, data[10])
    frames = 0
    while True:
        if position >= size:
            raise GifStructureError(f"ends at byte {size} without its trailer")
        introducer = data[position]
        if introducer == _TRAILER:
            if frames == 0:
                raise GifStructureError("reaches its trailer before any image")
            return Frames(frames, width, height)
        if introducer == _EXTENSION:
            position = _after_sub_blocks(data, position + 2)
        elif introducer == _IMAGE:
            if position + 10 > size:
                raise GifStructureError(f"ends at byte {size} inside an image descriptor")
            left, top, frame_width, frame_height, flags = _DESCRIPTOR.unpack_from(
                data, position + 1
            )
            width = max(width, left + frame_width)
            height = max(height, top + frame_height)
            position = _after_colour_table(position + 10, flags)
            if position >= size:
                raise GifStructureError(f"ends at byte {size} inside an image's colour table")
            if data[position] > _MAX_CODE_SIZE:
                raise GifStructureError(
                    f"has an image at byte {position} with an LZW code size of {data[position]}"
                )
            position = _after_sub_blocks(data, position + 1)
            frames += 1
        else:
            # Not a block: Pillow steps over such bytes (a second GIF's header glued on, a
            # stray empty sub-block), so does the walk; a zeroed tail still finds no trailer.
            found = _BLOCK_START.search(data, position)
            position = size if found is None else found.start()


def _after_colour_table(position: int, flags: int) -> int:
    """Where the bytes after a descriptor with `flags` (and its colour table, if any) start."""
    return position + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)


def _after_sub_blocks(data: bytes | mmap.mmap, position: int) -> int:
    """Where the bytes after the data sub-blocks starting at `position` (and their end) start."""
    size = len(data)
    while position < size:
        length = data[position]
        if length == 0xFF:
            # Nearly every sub-block of image data is full: 255 bytes after a length byte of
            # 0xFF, so the length bytes of a run of them lie 256 apart: one slice reads 64.
            lengths = data[position : position + _FULL_SUB_BLOCK * 64 : _FULL_SUB_BLOCK]
            position += _FULL_SUB_BLOCK * (len(lengths) - len(lengths.lstrip(b"\xff")))
            continue
        position += length + 1
        if length == 0:
            return position
    raise GifStructureError(f"ends at byte {size} inside a block's data")

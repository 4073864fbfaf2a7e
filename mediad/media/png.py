"""Is a PNG whole? Its chunks walked from the signature to IEND, each one's CRC checked, and an
animated PNG's frames held against its acTL, without decoding a frame after the first.

A PNG cut short loses its IEND, and damage anywhere breaks a CRC. An animated PNG (APNG) adds
frame controls (fcTL) and frame data (fdAT) after its image data, numbered in one sequence; a
frame lost or out of place breaks that sequence, and an animation cut between two frames holds
fewer frames than its acTL declares. The walk refuses what Pillow would refuse on seeking to
its last frame, no more:

- the signature, then chunks whose declared lengths fit in the file and whose CRCs match, up
  to IEND (anything after it is not read); IHDR first, and image data (IDAT) before IEND;
- fcTL and fdAT numbered 0, 1, 2... in file order, each fcTL's frame inside the image, and each
  frame after the first with data before the next fcTL;
- in an animation (one valid acTL before the image data, as Pillow reads it), at least as many
  frames as acTL declares.

The first frame is decoded too (images.py), which proves its compressed data; what only
decoding the others would catch is their data damaged in place with a CRC to match.
"""

from __future__ import annotations

import mmap
import re
import zlib

from mediad import errors

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Letters by the specification; Pillow also takes digits and underscores, so the walk does too.
_CHUNK_TYPE = re.compile(rb"\w{4}")
_MAX_LENGTH = 2**31 - 1
# Pillow's bound on acTL's frame count; over it, or zero, the file is shown as a still image.
_MAX_FRAMES = 2**31


class PngStructureError(errors.MediadError):
    """The bytes start as a PNG but are not a whole, well-formed one; the message says where."""


def check_structure(data: bytes | mmap.mmap) -> int:
    """The number of frames Pillow finds in `data` (1 for a still PNG); PngStructureError
    unless it is a PNG walked intact."""
    if data[:8] != _SIGNATURE:
        raise PngStructureError("has no PNG signature")
    # The CRCs are computed on views, not copies; no view outlives its call, so a mapped file
    # can be closed, whatever is raised.
    with memoryview(data) as view:
        return _walk(data, view)


def _walk(data: bytes | mmap.mmap, view: memoryview) -> int:
    size = len(data)
    position = 8
    width = height = 0
    declared: int | None = None  # acTL's frame count, while the file is an animation
    image_data = False  # the first IDAT (or fdAT standing for it) was seen
    default_image = False  # that image comes before any fcTL: it is not an animation frame
    sequence = 0  # the next fcTL or fdAT sequence number
    awaiting_data = False  # an fcTL was read, its frame's data not yet
    later_frames = 0  # frames with data after the image data
    while True:
        if position + 12 > size:
            raise PngStructureError(f"ends at byte {size} without an IEND chunk")
        length = _u32(data, position)
        kind = data[position + 4 : position + 8]
        start, end = position + 8, position + 12 + length
        if not _CHUNK_TYPE.fullmatch(kind):
            raise PngStructureError(f"has no chunk type at byte {position} ({kind!r})")
        if length > _MAX_LENGTH or end > size:
            raise PngStructureError(
                f"has a chunk at byte {position} ({_name(kind)}) whose length ({length} bytes)"
                f" runs past its end (byte {size})"
            )
        if zlib.crc32(view[position + 4 : end - 4]) != _u32(data, end - 4):
            raise PngStructureError(
                f"has a chunk at byte {position} ({_name(kind)}) with a bad CRC"
            )

        if position == 8:
            if kind != b"IHDR" or length < 13:
                raise PngStructureError("does not start with an image header (IHDR)")
            width, height = _u32(data, start), _u32(data, start + 4)
        elif kind == b"IEND":
            break
        elif kind == b"acTL":
            if length < 8:
                raise PngStructureError(f"has a chunk at byte {position} (acTL) cut short")
            if not image_data:
                # As Pillow reads it: a second acTL undoes the first, a count out of range is
                # ignored; either way the file is shown as its still image.
                count = _u32(data, start)
                declared = None if declared is not None or not 0 < count <= _MAX_FRAMES else count
        elif kind == b"fcTL":
            if length < 26 or _u32(data, start) != sequence:
                raise PngStructureError(_out_of_sequence(kind, position, length, 26))
            sequence += 1
            frame_width, frame_height, left, top = (_u32(data, start + i) for i in (4, 8, 12, 16))
            if left + frame_width > width or top + frame_height > height:
                raise PngStructureError(f"has a frame at byte {position} outside the image")
            if awaiting_data and image_data and declared is not None:
                raise PngStructureError(f"has a frame at byte {position} without data")
            awaiting_data = True
        elif kind in (b"IDAT", b"fdAT"):
            if kind == b"fdAT":
                if length < 4 or sequence == 0 or _u32(data, start) != sequence:
                    raise PngStructureError(_out_of_sequence(kind, position, length, 4))
                sequence += 1
            if not image_data:
                image_data = True
                default_image = declared is not None and sequence == 0
            elif awaiting_data:
                later_frames += 1
            awaiting_data = False
        position = end

    if not image_data:
        raise PngStructureError("holds no image data (IDAT)")
    if declared is None:
        return 1
    frames = declared + default_image
    if later_frames < frames - 1:
        raise PngStructureError(
            f"declares {declared} frames in its acTL chunk but holds "
            f"{later_frames + 1 - default_image}"
        )
    return frames


def _out_of_sequence(kind: bytes, position: int, length: int, least: int) -> str:
    if length < least:
        return f"has a chunk at byte {position} ({_name(kind)}) cut short"
    return f"has a chunk at byte {position} ({_name(kind)}) out of sequence: a frame lost or moved"


def _name(kind: bytes) -> str:
    return kind.decode("ascii")


def _u32(data: bytes | mmap.mmap, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "big")

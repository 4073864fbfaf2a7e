"""The directories (IFDs) of a TIFF structure, as EXIF and a JPEG's MP index hold them.

Read from a buffer the caller already holds, by the rules Pillow reads them by
(`TiffImagePlugin.ImageFileDirectory_v2.load` and `Image.Exif`): the same tags survive a damaged
directory, and each value has the same shape (a number, a string, bytes, or a tuple of numbers;
a rational as its float), so a photo's metadata is the same whether this module or Pillow read
it. Only Pillow's tag tables are used (`PIL.TiffTags`, plain data); none of its code runs.

Pure Python over bytes: nothing here decodes, every read is bounded by the buffer, and no chain
of directories is followed. Hostile bytes cost at most one pass over a directory's 65,535
entries and one copy of the buffer's bytes, whatever they claim.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

from PIL import TiffTags

from mediad import errors

Buffer = bytes | bytearray | memoryview | mmap.mmap

# Pillow's readers per field type: bytes per value, and the struct code of a number (None: the
# value is bytes, a string or rationals, see _value). Types not listed are skipped, as Pillow does.
_BYTE, _ASCII, _RATIONAL, _UNDEFINED, _SIGNED_RATIONAL = 1, 2, 5, 7, 10
_TYPES: dict[int, tuple[int, str | None]] = {
    _BYTE: (1, None),
    _ASCII: (1, None),
    3: (2, "H"),  # SHORT
    4: (4, "L"),  # LONG
    _RATIONAL: (8, "L"),
    6: (1, "b"),  # SIGNED BYTE
    _UNDEFINED: (1, None),
    8: (2, "h"),  # SIGNED SHORT
    9: (4, "l"),  # SIGNED LONG
    _SIGNED_RATIONAL: (8, "l"),
    11: (4, "f"),  # FLOAT
    12: (8, "d"),  # DOUBLE
    13: (4, "L"),  # IFD
    16: (8, "Q"),  # LONG8
}
_HEADERS = {b"MM\x00\x2a": ">", b"II\x2a\x00": "<", b"MM\x2a\x00": ">", b"II\x00\x2a": "<"}
_BIG_TIFF = (b"MM\x00\x2b", b"II\x2b\x00")


class TiffError(errors.MediadError):
    """The bytes do not start as a TIFF structure; the message says why."""


class Tiff:
    """A TIFF structure in `data` (offsets count from its first byte): its directories by
    offset, each read as Pillow reads it."""

    def __init__(self, data: Buffer) -> None:
        head = bytes(data[:8])
        if head[:4] in _BIG_TIFF:
            raise TiffError("is a BigTIFF structure, which EXIF never is")
        endian = _HEADERS.get(head[:4])
        if endian is None:
            raise TiffError(f"has no TIFF header (it starts {head[:4]!r})")
        if len(head) < 8:
            raise TiffError("ends inside its TIFF header")
        self._data = data
        self._endian = endian
        (self.first,) = struct.unpack(endian + "L", head[4:8])

    def directory(
        self, offset: Any, group: int | None = None, *, longest: int | None = None
    ) -> dict[int, Any]:
        """The tags of the directory at `offset` by number, their values shaped as Pillow's
        `Exif` gives them; `group` names the tag table (None: TIFF's own, else an IFD's tag such
        as 0x8769 for EXIF's). An offset that is not a number reads as no directory.

        `longest`: numbers in a tuple beyond which a tag is left out, its values not decoded (a
        table of millions of numbers would otherwise take many times the buffer's memory)."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            return {}
        values: dict[int, Any] = {}
        for tag, kind, count, raw in self._entries(offset):
            value = _value(tag, kind, count, raw, group, self._endian, longest)
            if value is not None:
                values[tag] = value
        return values

    def _entries(self, offset: int) -> list[tuple[int, int, int, bytes]]:
        """(tag, type, count, value bytes) of each entry Pillow keeps: the first of each tag,
        of a known type, holding at least one value. A value past the end ends the directory
        there, as Pillow's reader stops at a truncated read."""
        data, endian = self._data, self._endian
        limit = len(data)
        if offset + 2 > limit:
            return []
        (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
        entry = struct.Struct(endian + "HHL4s")
        out: list[tuple[int, int, int, bytes]] = []
        seen: set[int] = set()
        position = offset + 2
        total = 0  # out-of-line bytes claimed so far: Pillow skips a tag once they pass `limit`
        for _ in range(count):
            if position + 12 > limit:
                break
            tag, kind, values, inline = entry.unpack(data[position : position + 12])
            position += 12
            if tag in seen or kind not in _TYPES:
                continue
            size = values * _TYPES[kind][0]
            if size > 4:
                (start,) = struct.unpack(endian + "L", inline)
                total += size
                if total > limit:
                    continue
                if start + size > limit:
                    break
                raw = bytes(data[start : start + size])
            else:
                raw = inline[:size]
            if not raw:
                continue
            seen.add(tag)
            out.append((tag, kind, values, raw))
        return out


def _value(
    tag: int,
    kind: int,
    count: int,
    raw: bytes,
    group: int | None,
    endian: str,
    longest: int | None = None,
) -> Any:
    """One entry's value as Pillow's `Exif` returns it (`ImageFileDirectory_v2._setitem`, then
    `Exif._fixup`): bytes for BYTE and UNDEFINED, a string for ASCII (or the number a tag's enum
    names), else one number when the tag is specified as one value or holds one, otherwise a
    tuple. Rationals are floats, NaN for a zero denominator. None: a tuple over `longest`."""
    if kind in (_BYTE, _UNDEFINED):
        return raw
    info = TiffTags.lookup(tag, group)
    if kind == _ASCII:
        text = (raw[:-1] if raw.endswith(b"\0") else raw).decode("latin-1", "replace")
        return info.cvt_enum(text)
    size, code = _TYPES[kind]
    single = info.length == 1 or count == 1
    if single:
        # Pillow keeps the first of the values of a tag specified as one.
        count, raw = 1, raw[:size]
    elif longest is not None and count > longest:
        return None
    if kind in (_RATIONAL, _SIGNED_RATIONAL):
        parts = struct.unpack(f"{endian}{2 * count}{code}", raw)
        numbers: tuple[Any, ...] = tuple(
            top / bottom if bottom else float("nan")
            for top, bottom in zip(parts[::2], parts[1::2], strict=True)
        )
    else:
        assert code is not None
        numbers = struct.unpack(f"{endian}{count}{code}", raw)
    return numbers[0] if single else numbers

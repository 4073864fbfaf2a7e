"""Public copies: the original's own bytes less its GPS, device serial numbers and maker notes.

Nothing else changes. In a JPEG the EXIF block (APP1) is edited in place: the entries that are
stripped leave their IFD (the entries after them move up, the IFD keeps its place and size) and
the bytes they pointed at are zeroed, so no offset anywhere in the block, the file or an MPO's
index moves; XMP's GPS properties are blanked with spaces, keeping the segment's length; the
picture data is copied as it is, so the copy decodes to exactly the original's pixels. A PNG
loses its `eXIf` chunk and a WebP its `EXIF` chunk (and the VP8X flag that announces it).

`public_copy(source, mime_type, target)` writes the copy, or says that there was nothing to
strip (the original can be served as it is). It parses hostile bytes: it runs in a decoder
worker, as part of the derive task.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mediad import errors

# IFD0: the GPS IFD's pointer, and DNG's CameraSerialNumber.
GPS_IFD = 0x8825
EXIF_IFD = 0x8769
IFD0_STRIPPED = frozenset({0xC62F})
# The Exif IFD: MakerNote, BodySerialNumber, LensSerialNumber.
EXIF_STRIPPED = frozenset({0x927C, 0xA431, 0xA435})

# Bytes per value of each TIFF field type.
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_EXIF_HEADER = b"Exif\x00\x00"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
# exif:GPSLatitude="..." as an attribute, or <exif:GPSLatitude>...</exif:GPSLatitude> (with
# whatever RDF it holds) as an element.
_XMP_GPS = re.compile(
    rb"""\bexif:GPS[A-Za-z]*\s*=\s*(?:"[^"]*"|'[^']*')"""
    rb"|<exif:(GPS[A-Za-z]*)\b[^>]*?(?:/>|>.*?</exif:\1\s*>)",
    re.DOTALL,
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VP8X_EXIF_FLAG = 0x08
_COPY_BLOCK = 1024 * 1024


class UnreadableExifError(errors.MediadError):
    """An EXIF block whose structure cannot be followed (offsets outside it, loops)."""


@dataclass
class Stripped:
    """What a public copy left out; empty: nothing to strip."""

    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.removed)


def public_copy(source: Path, mime_type: str, target: Path) -> Stripped:
    """Write `source` less its GPS, serials and maker notes to `target` (an existing file, which
    is truncated); an empty Stripped (and `target` left empty) when there was nothing to strip.
    Streams: only a JPEG's metadata segments are held in memory, never the picture."""
    if mime_type not in ("image/jpeg", "image/png", "image/apng", "image/webp"):
        raise errors.UnsupportedMediaError(f"no public copy is made of {mime_type}")
    with open(source, "rb") as src:
        if mime_type == "image/jpeg":
            head, marker = _jpeg_head(src)
            copy, stripped = _strip_jpeg_head(head)
            if stripped:
                with open(target, "r+b") as out:
                    out.truncate()
                    out.write(copy)
                    out.write(marker)
                    shutil.copyfileobj(src, out, _COPY_BLOCK)
            return stripped
        strip = _strip_png if mime_type in ("image/png", "image/apng") else _strip_webp
        if not strip(src, None):
            return Stripped()
        src.seek(0)
        with open(target, "r+b") as out:
            out.truncate()
            return strip(src, out)


# --- JPEG -------------------------------------------------------------------------------------


def strip_jpeg(data: bytes) -> tuple[bytes, Stripped]:
    """The JPEG less what is stripped, with the same length and every other byte as it was
    (an unreadable EXIF block is dropped whole: a segment fewer)."""
    stream = io.BytesIO(data)
    head, marker = _jpeg_head(stream)
    copy, stripped = _strip_jpeg_head(head)
    return copy + marker + stream.read(), stripped


def _jpeg_head(src: BinaryIO) -> tuple[bytes, bytes]:
    """The bytes from the start-of-image marker up to the first scan (its metadata segments,
    tables and frame header), and the marker read that ends them (SOS, or EOI)."""
    head = bytearray(src.read(2))
    if head != b"\xff\xd8":
        raise errors.CorruptMediaError("not a JPEG: no start-of-image marker")
    while True:
        byte = src.read(1)
        if byte != b"\xff":
            where = f"stray bytes at byte {len(head)}" if byte else "no picture data"
            raise errors.CorruptMediaError(f"the JPEG has {where}")
        marker = src.read(1)
        while marker == b"\xff":  # fill bytes, kept as they are
            head += b"\xff"
            marker = src.read(1)
        if not marker:
            raise errors.CorruptMediaError("the JPEG ends before its picture data")
        code = marker[0]
        if code in (0xDA, 0xD9):  # SOS: the picture data starts; EOI
            return bytes(head), b"\xff" + marker
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            head += b"\xff" + marker
            continue
        length = src.read(2)
        size = int.from_bytes(length, "big")
        body = src.read(max(size - 2, 0))
        if len(length) < 2 or size < 2 or len(body) < size - 2:
            raise errors.CorruptMediaError(
                f"the JPEG's segment at byte {len(head)} runs past its end"
            )
        head += b"\xff" + marker + length + body


def _strip_jpeg_head(head: bytes) -> tuple[bytes, Stripped]:
    out = bytearray(head)
    stripped = Stripped()
    dropped: list[tuple[int, int]] = []
    for marker, start, end in _header_segments(head):
        body = start + 4  # after the marker and the length
        if marker == 0xE1 and head[body : body + 6] == _EXIF_HEADER:
            try:
                removed = _strip_tiff(out, body + 6, end)
            except UnreadableExifError as exc:
                # Nothing in it can be trusted to be free of GPS: the whole block goes.
                dropped.append((start, end))
                stripped.removed.append(f"exif (unreadable: {exc})")
            else:
                stripped.removed.extend(removed)
        elif (
            marker == 0xE1
            and head[body : body + len(_XMP_HEADER)] == _XMP_HEADER
            and _blank_xmp_gps(out, body + len(_XMP_HEADER), end)
        ):
            stripped.removed.append("xmp_gps")
    for start, end in reversed(dropped):
        del out[start:end]
    return bytes(out), stripped


def _header_segments(head: bytes) -> Iterable[tuple[int, int, int]]:
    """(marker, start, end) of each segment with a length in `head` (read by _jpeg_head)."""
    position, size = 2, len(head)
    while position + 2 <= size:
        marker = head[position + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 1 if marker == 0xFF else 2
            continue
        end = position + 2 + int.from_bytes(head[position + 2 : position + 4], "big")
        yield marker, position, end
        position = end


def _blank_xmp_gps(out: bytearray, start: int, end: int) -> bool:
    """Overwrite XMP's exif:GPS* properties with spaces (XML ignores them); True if any."""
    found = False
    for match in _XMP_GPS.finditer(bytes(out[start:end])):
        out[start + match.start() : start + match.end()] = b" " * (match.end() - match.start())
        found = True
    return found


class _Tiff:
    """Reads and edits a TIFF structure (EXIF) inside `out[base:end]`, in place."""

    def __init__(self, out: bytearray, base: int, end: int) -> None:
        self.out, self.base, self.end = out, base, end
        order = bytes(out[base : base + 2])
        if order == b"II":
            self.order = "<"
        elif order == b"MM":
            self.order = ">"
        else:
            raise UnreadableExifError("no TIFF byte order mark")
        if self.u16(2) != 42:
            raise UnreadableExifError("no TIFF magic number")
        self.seen: set[int] = set()

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or self.base + offset + length > self.end:
            raise UnreadableExifError(f"an offset ({offset}) points outside the block")

    def u16(self, offset: int) -> int:
        self._check(offset, 2)
        (value,) = struct.unpack_from(self.order + "H", self.out, self.base + offset)
        return int(value)

    def u32(self, offset: int) -> int:
        self._check(offset, 4)
        (value,) = struct.unpack_from(self.order + "I", self.out, self.base + offset)
        return int(value)

    def entries(self, ifd: int) -> list[tuple[int, int, int, int, int]]:
        """(position, tag, type, count, value_or_offset) of each entry of the IFD at `ifd`."""
        if ifd in self.seen:
            raise UnreadableExifError("an IFD is reached twice")
        self.seen.add(ifd)
        count = self.u16(ifd)
        self._check(ifd, 2 + 12 * count + 4)
        found = []
        for index in range(count):
            position = ifd + 2 + 12 * index
            tag, kind, number = self.u16(position), self.u16(position + 2), self.u32(position + 4)
            found.append((position, tag, kind, number, self.u32(position + 8)))
        return found

    def value_span(self, kind: int, count: int, pointer: int) -> tuple[int, int] | None:
        """(offset, length) of an entry's value stored outside the IFD, None when inline."""
        length = _TYPE_SIZES.get(kind, 1) * count
        if length <= 4:
            return None
        self._check(pointer, length)
        return pointer, length

    def zero(self, offset: int, length: int) -> None:
        self._check(offset, length)
        start = self.base + offset
        self.out[start : start + length] = bytes(length)

    def remove(self, ifd: int, tags: frozenset[int]) -> list[int]:
        """Take the entries with `tags` out of the IFD at `ifd` (the rest move up; the IFD keeps
        its size, its tail zeroed) and zero their values; the tags removed."""
        entries = self.entries(ifd)
        self.seen.discard(ifd)
        kept = [e for e in entries if e[1] not in tags]
        gone = [e for e in entries if e[1] in tags]
        if not gone:
            return []
        for _, _, kind, count, pointer in gone:
            span = self.value_span(kind, count, pointer)
            if span is not None:
                self.zero(*span)
        start = self.base + ifd
        next_ifd = bytes(self.out[start + 2 + 12 * len(entries) : start + 6 + 12 * len(entries)])
        rows = b"".join(bytes(self.out[self.base + e[0] : self.base + e[0] + 12]) for e in kept)
        packed = struct.pack(self.order + "H", len(kept)) + rows + next_ifd
        total = 2 + 12 * len(entries) + 4
        self.out[start : start + total] = packed + bytes(total - len(packed))
        return [e[1] for e in gone]

    def zero_ifd(self, ifd: int) -> None:
        """Zero a whole IFD (the GPS one): its entries and every value they point at."""
        entries = self.entries(ifd)
        for _, _, kind, count, pointer in entries:
            span = self.value_span(kind, count, pointer)
            if span is not None:
                self.zero(*span)
        self.zero(ifd, 2 + 12 * len(entries) + 4)


_NAMES = {GPS_IFD: "gps", 0xC62F: "camera_serial_number", 0x927C: "maker_note",
          0xA431: "body_serial_number", 0xA435: "lens_serial_number"}  # fmt: skip


def _strip_tiff(out: bytearray, base: int, end: int) -> list[str]:
    """Strip the EXIF block at `out[base:end]` in place; the names of what went."""
    tiff = _Tiff(out, base, end)
    ifd0 = tiff.u32(4)
    entries = {tag: (kind, count, value) for _, tag, kind, count, value in tiff.entries(ifd0)}
    tiff.seen.clear()
    removed: list[int] = []
    if GPS_IFD in entries:
        kind, count, pointer = entries[GPS_IFD]
        if kind in (4, 13) and count == 1:
            tiff.zero_ifd(pointer)
        removed += tiff.remove(ifd0, frozenset({GPS_IFD}))
    removed += tiff.remove(ifd0, IFD0_STRIPPED)
    if EXIF_IFD in entries:
        kind, count, pointer = entries[EXIF_IFD]
        if kind in (4, 13) and count == 1:
            removed += tiff.remove(pointer, EXIF_STRIPPED)
    return [_NAMES[tag] for tag in removed]


# --- PNG and WebP -----------------------------------------------------------------------------


def strip_png(data: bytes) -> tuple[bytes, Stripped]:
    """The PNG without its eXIf chunk, every other chunk as it was."""
    out = io.BytesIO()
    stripped = _strip_png(io.BytesIO(data), out)
    return out.getvalue(), stripped


def strip_webp(data: bytes) -> tuple[bytes, Stripped]:
    """The WebP without its EXIF chunk (and VP8X's flag for it), every other chunk as it was."""
    out = io.BytesIO()
    stripped = _strip_webp(io.BytesIO(data), out)
    return out.getvalue(), stripped


def _copy(src: BinaryIO, out: BinaryIO, length: int) -> None:
    while length > 0:
        block = src.read(min(length, _COPY_BLOCK))
        if not block:
            raise errors.CorruptMediaError("the file ends inside a chunk")
        out.write(block)
        length -= len(block)


def _strip_png(src: BinaryIO, out: BinaryIO | None) -> Stripped:
    """Copy the PNG at `src` to `out` less its eXIf chunk; with `out` None, only say whether
    there is one (chunk headers read, the rest skipped)."""
    if src.read(8) != _PNG_SIGNATURE:
        raise errors.CorruptMediaError("not a PNG: no signature")
    if out is not None:
        out.write(_PNG_SIGNATURE)
    stripped = Stripped()
    while header := src.read(8):
        if len(header) < 8:
            raise errors.CorruptMediaError("the PNG ends inside a chunk header")
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        if kind == b"eXIf":
            stripped.removed.append("exif")
            src.seek(length + 4, io.SEEK_CUR)
        elif out is None:
            src.seek(length + 4, io.SEEK_CUR)
        else:
            out.write(header)
            _copy(src, out, length + 4)
        if kind == b"IEND":
            if out is not None:
                shutil.copyfileobj(src, out, _COPY_BLOCK)  # what trails is not ours to judge
            break
    return stripped


def _strip_webp(src: BinaryIO, out: BinaryIO | None) -> Stripped:
    """Copy the WebP at `src` to `out` less its EXIF chunk (and VP8X's flag for it); with `out`
    None, only say whether there is one."""
    riff = src.read(12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WEBP":
        raise errors.CorruptMediaError("not a WebP: no RIFF/WEBP header")
    if out is not None:
        out.write(riff)
    stripped = Stripped()
    written = 4  # "WEBP"
    first = True
    while header := src.read(8):
        if len(header) < 8:
            raise errors.CorruptMediaError("the WebP ends inside a chunk header")
        kind, length = header[:4], int.from_bytes(header[4:], "little")
        padded = length + (length & 1)  # chunks are padded to an even length
        if kind == b"EXIF" or out is None:
            if kind == b"EXIF":
                stripped.removed.append("exif")
            src.seek(padded, io.SEEK_CUR)
        elif first and kind == b"VP8X":
            body = bytearray(src.read(padded))
            body[0] &= ~_VP8X_EXIF_FLAG & 0xFF  # the file announces no EXIF any more
            out.write(header)
            out.write(body)
            written += 8 + len(body)
        else:
            out.write(header)
            _copy(src, out, padded)
            written += 8 + padded
        first = False
    if out is not None:
        out.seek(4)
        out.write(written.to_bytes(4, "little"))
        out.seek(0, io.SEEK_END)
    return stripped

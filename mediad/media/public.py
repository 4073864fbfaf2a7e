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

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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
    is truncated); an empty Stripped (and `target` left empty) when there was nothing to strip."""
    data = source.read_bytes()
    if mime_type == "image/jpeg":
        copy, stripped = strip_jpeg(data)
    elif mime_type in ("image/png", "image/apng"):
        copy, stripped = strip_png(data)
    elif mime_type == "image/webp":
        copy, stripped = strip_webp(data)
    else:
        raise errors.UnsupportedMediaError(f"no public copy is made of {mime_type}")
    if stripped:
        with open(target, "r+b") as out:
            out.truncate()
            out.write(copy)
    return stripped


# --- JPEG -------------------------------------------------------------------------------------


def strip_jpeg(data: bytes) -> tuple[bytes, Stripped]:
    """The JPEG less what is stripped, with the same length and every other byte as it was
    (an unreadable EXIF block is dropped whole: a segment fewer)."""
    if data[:2] != b"\xff\xd8":
        raise errors.CorruptMediaError("not a JPEG: no start-of-image marker")
    out = bytearray(data)
    stripped = Stripped()
    dropped: list[tuple[int, int]] = []
    for marker, start, end in _header_segments(data):
        body = start + 4  # after the marker and the length
        if marker == 0xE1 and data[body : body + 6] == _EXIF_HEADER:
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
            and data[body : body + len(_XMP_HEADER)] == _XMP_HEADER
            and _blank_xmp_gps(out, body + len(_XMP_HEADER), end)
        ):
            stripped.removed.append("xmp_gps")
    for start, end in reversed(dropped):
        del out[start:end]
    return bytes(out), stripped


def _header_segments(data: bytes) -> Iterable[tuple[int, int, int]]:
    """(marker, start, end) of each segment before the first scan; the scans after it and the
    picture data are never looked at."""
    position, size = 2, len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            raise errors.CorruptMediaError(f"the JPEG has stray bytes at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # SOS: the picture data starts; EOI
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 2 + length
        if length < 2 or end > size:
            raise errors.CorruptMediaError(
                f"the JPEG's segment at byte {position} runs past its end"
            )
        yield marker, position, end
        position = end
    raise errors.CorruptMediaError("the JPEG ends before its picture data")


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
    if not data.startswith(_PNG_SIGNATURE):
        raise errors.CorruptMediaError("not a PNG: no signature")
    out = bytearray(_PNG_SIGNATURE)
    stripped = Stripped()
    position = len(_PNG_SIGNATURE)
    while position < len(data):
        if position + 12 > len(data):
            raise errors.CorruptMediaError(f"the PNG's chunk at byte {position} is cut short")
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            raise errors.CorruptMediaError(f"the PNG's {kind!r} chunk runs past its end")
        if kind == b"eXIf":
            stripped.removed.append("exif")
        else:
            out += data[position:end]
        position = end
        if kind == b"IEND":
            out += data[position:]  # whatever trails the image is not ours to judge
            break
    return bytes(out), stripped


def strip_webp(data: bytes) -> tuple[bytes, Stripped]:
    """The WebP without its EXIF chunk (and VP8X's flag for it), every other chunk as it was."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise errors.CorruptMediaError("not a WebP: no RIFF/WEBP header")
    out = bytearray(data[:12])
    stripped = Stripped()
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        length = int.from_bytes(data[position + 4 : position + 8], "little")
        end = position + 8 + length + (length & 1)  # chunks are padded to an even length
        if end > len(data) + (length & 1):
            raise errors.CorruptMediaError(f"the WebP's {kind!r} chunk runs past its end")
        if kind == b"EXIF":
            stripped.removed.append("exif")
        else:
            out += data[position:end]
        position = end
    if stripped and out[12:16] == b"VP8X":
        out[20] &= ~_VP8X_EXIF_FLAG & 0xFF
    out[4:8] = (len(out) - 8).to_bytes(4, "little")
    return bytes(out), stripped

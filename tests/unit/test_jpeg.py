"""The JPEG structure walk, on real JPEGs made by Pillow and on the ways a download damages them."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable

import pytest
from PIL import Image

from mediad import errors
from mediad.media import info, jpeg
from tests import media


def _encode(mode: str = "RGB", **save: object) -> bytes:
    buf = io.BytesIO()
    media.noise_image(96, 64, seed=3).convert(mode).save(buf, "JPEG", **save)
    return buf.getvalue()


def _decodes(data: bytes) -> bool:
    """Whether Pillow decodes `data` in full (what the walk stands in for)."""
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:
            img.load()
    except (OSError, SyntaxError):
        return False
    return True


def _scan_start(data: bytes) -> int:
    """The first byte of the first scan's entropy-coded data."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def _rejects(data: bytes, reason: str) -> None:
    with pytest.raises(jpeg.JpegStructureError, match=reason):
        jpeg.check_structure(data)


@pytest.mark.parametrize(
    "save",
    [
        {},
        {"progressive": True},
        {"optimize": True},
        {"restart_marker_blocks": 2},
        {"progressive": True, "restart_marker_rows": 1},
        {"subsampling": 0, "quality": 100},
        {"mode": "L"},
        {"mode": "CMYK"},
    ],
    ids=[
        "baseline",
        "progressive",
        "optimized",
        "restarts",
        "progressive-restarts",
        "444-q100",
        "grey",
        "cmyk",
    ],
)
def test_real_jpegs_are_whole(save: dict[str, object]) -> None:
    """Every kind of JPEG Pillow writes (several scans, restart markers, stuffed bytes) is whole."""
    options = dict(save)
    data = _encode(str(options.pop("mode", "RGB")), **options)
    assert b"\xff\x00" in data[_scan_start(data) :]  # the walk must step over stuffed bytes

    jpeg.check_structure(data)


def test_camera_jpeg_with_exif_is_whole() -> None:
    jpeg.check_structure(media.jpeg_with_exif(320, 240))


def test_what_follows_the_end_is_not_read() -> None:
    """Bytes after EOI (a second MPO picture, a phone's trailer) do not make a JPEG damaged."""
    jpeg.check_structure(_encode() + random.Random(1).randbytes(4000))


def test_fill_bytes_before_a_marker_are_allowed() -> None:
    """Any number of FF may precede a marker, between segments as after the scan data."""
    data = _encode()
    padded = data[:2] + b"\xff\xff\xff" + data[2:-2] + b"\xff\xff" + data[-2:]

    jpeg.check_structure(padded)


def test_stray_bytes_between_segments_are_stepped_over() -> None:
    """libjpeg warns of "extraneous bytes before marker" and decodes; so the file is whole."""
    data = _encode()
    dqt = data.index(b"\xff\xdb")
    stray = data[:dqt] + b"\x00\x17" + data[dqt:]

    assert _decodes(stray)
    jpeg.check_structure(stray)


def test_a_stuffed_zero_between_segments_is_stepped_over() -> None:
    """An FF 00 pair out of a scan (Pillow's jpeg_ff00_header.jpg holds one after its APP14) is
    no marker: libjpeg discards it with the bytes around it and decodes; so the file is whole."""
    data = _encode()
    dqt = data.index(b"\xff\xdb")
    stray = data[:dqt] + b"\xff\x00\x00\x02" + data[dqt:]

    assert _decodes(stray)
    jpeg.check_structure(stray)


def test_a_stuffed_zero_is_no_end_of_image() -> None:
    """Stepping over FF 00 between segments still asks for an end-of-image marker after it."""
    data = _encode()
    _rejects(data[: data.index(b"\xff\xda")] + b"\xff\x00", "without an end-of-image marker")


def test_a_zeroed_tail_is_damage_a_decoder_misses() -> None:
    """A body whose last third never arrived but was zero-filled: Pillow decodes it (libjpeg
    pads with grey), the walk finds no end-of-image marker."""
    data = bytearray(_encode(quality=95))
    third = len(data) // 3
    data[-third:] = bytes(third)

    assert _decodes(bytes(data))
    _rejects(bytes(data), "inside its image data, without an end-of-image marker")


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9, 0.999])
def test_a_jpeg_cut_anywhere_is_damaged(fraction: float) -> None:
    data = _encode(progressive=True)
    cut = max(3, int(len(data) * fraction))

    with pytest.raises(jpeg.JpegStructureError, match="ends at byte"):
        jpeg.check_structure(data[:cut])


def test_a_missing_end_marker_is_damage() -> None:
    _rejects(_encode()[:-2], "without an end-of-image marker")


def test_noise_inside_the_scan_is_damage() -> None:
    """Foreign bytes in the image data hold FF followed by what no scan may contain."""
    data = bytearray(_encode())
    start = _scan_start(bytes(data))
    data[start + 100 : start + 1100] = random.Random(2).randbytes(1000)

    _rejects(bytes(data), "damaged image data")


def test_a_segment_longer_than_the_file_is_damage() -> None:
    data = bytearray(_encode())
    dqt = data.index(b"\xff\xdb")
    data[dqt + 2 : dqt + 4] = (0xFFF0).to_bytes(2, "big")

    _rejects(bytes(data), "segment at byte .* runs past its end")


def _segment(data: bytes, marker: bytes) -> int:
    """The offset of the first byte after the length of the first `marker` segment."""
    return data.index(b"\xff" + marker) + 4


def _damage(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


def _oversubscribed(data: bytes) -> bytes:
    """A Huffman table claiming three 1-bit codes: more than one bit can spell."""
    return _damage(data, _segment(data, b"\xc4") + 1, 3)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_oversubscribed, "bogus Huffman table"),
        (lambda d: _damage(d, _segment(d, b"\xc4"), 0x25), "bogus Huffman table"),
        (lambda d: _damage(d, _segment(d, b"\xdb"), 0x07), "bogus quantization table"),
        (lambda d: _damage(d, _segment(d, b"\xc0") + 4, 0), "empty or impossible image"),
        (lambda d: _damage(d, _segment(d, b"\xc0") + 5, 0), "empty or impossible image"),
        (lambda d: _damage(d, _segment(d, b"\xc0") + 7, 0x51), "bad component"),
        (lambda d: _damage(d, _segment(d, b"\xda") + 1, 0x77), "naming no frame component"),
        (lambda d: _damage(d, _segment(d, b"\xda"), 5), "scan header .* wrong length"),
    ],
    ids=[
        "huffman-oversubscribed",
        "huffman-bad-class",
        "quantization-bad-id",
        "zero-width",
        "zero-components",
        "sampling-5x1",
        "scan-unknown-component",
        "scan-wrong-count",
    ],
)
def test_headers_libjpeg_refuses_are_damage(damage: Callable[[bytes], bytes], reason: str) -> None:
    """A header libjpeg would refuse (its own checks, no stricter) makes the file damaged, and
    Pillow, which is libjpeg, indeed does not decode it."""
    damaged = damage(_encode())

    assert not _decodes(damaged)
    _rejects(damaged, reason)


def test_a_second_frame_header_is_damage() -> None:
    data = _encode()
    sof = data.index(b"\xff\xc0")
    frame = data[sof : sof + 2 + int.from_bytes(data[sof + 2 : sof + 4], "big")]

    _rejects(data[:sof] + frame + data[sof:], "second frame header")


def test_image_data_before_the_frame_header_is_damage() -> None:
    """A scan with no SOF before it: the file's header was lost or rearranged."""
    data = _encode()
    sof = data.index(b"\xff\xc0")
    sof_length = int.from_bytes(data[sof + 2 : sof + 4], "big")

    _rejects(data[:sof] + data[sof + 2 + sof_length :], "image data before its frame header")


def test_an_end_marker_before_any_image_data_is_damage() -> None:
    data = _encode()

    _rejects(data[: data.index(b"\xff\xda")] + b"\xff\xd9", "before any image data")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no JPEG start-of-image marker"),
        (b"\xff\xd8", "no JPEG start-of-image marker"),
        (b"\x89PNG\r\n\x1a\n", "no JPEG start-of-image marker"),
        (b"\xff\xd8\x00\x10JFIF\x00", "without an end-of-image marker"),
        (b"\xff\xd8\xff\x05\x00\x04", "invalid marker 0x05"),
        (b"\xff\xd8\xff\xd8\xff\xd9", "invalid marker 0xd8"),
        (b"\xff\xd8\xff\xe0\x00", "runs past its end"),
    ],
    ids=["empty", "only-soi", "png", "no-marker", "reserved-marker", "second-soi", "short-app0"],
)
def test_malformed_headers_are_named(body: bytes, reason: str) -> None:
    _rejects(body, reason)


def test_any_damage_raises_only_the_structure_error() -> None:
    """Random bytes overwritten and random cuts never escape as IndexError or the like."""
    rng = random.Random(9)
    originals = [_encode(), _encode(progressive=True), media.jpeg_with_exif(64, 48)]
    for round_ in range(1500):
        data = bytearray(originals[round_ % len(originals)])
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        del data[rng.randrange(1, len(data) + 1) :]
        with contextlib.suppress(jpeg.JpegStructureError):
            jpeg.check_structure(bytes(data))


# --- what a probe reads of a whole JPEG: what Pillow reads of it -------------------------------


def _with_segments(data: bytes, *segments: tuple[int, bytes]) -> bytes:
    """`data` with (marker, body) segments inserted right after its SOI."""
    inserted = b"".join(
        bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body
        for marker, body in segments
    )
    return data[:2] + inserted + data[2:]


def _xmp(orientation: int) -> tuple[int, bytes]:
    packet = f'<x:xmpmeta><rdf:Description tiff:Orientation="{orientation}"/></x:xmpmeta>'
    return 0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet.encode()


def _split_exif(data: bytes) -> bytes:
    """`data` with its one EXIF segment written as two, as extended EXIF is."""
    start = data.index(b"\xff\xe1")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    body = data[start + 4 : start + 2 + length]
    half = 6 + (len(body) - 6) // 2
    first, second = body[:half], b"Exif\x00\x00" + body[half:]
    rest = data[start + 2 + length :]
    return _with_segments(data[:start] + rest, (0xE1, first), (0xE1, second))


def _mpo(gain_map: bool = False) -> bytes:
    buf = io.BytesIO()
    frames = [media.noise_image(40, 30, seed=seed) for seed in (1, 2)]
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    return _with_segments(data, (0xE1, b'<x hdrgm:Version="1.0"/>')) if gain_map else data


@pytest.mark.parametrize(
    "make",
    [
        lambda: _encode(),
        lambda: _encode("L"),
        lambda: _encode("CMYK"),
        lambda: _encode(progressive=True),
        lambda: media.jpeg_with_exif(64, 48, orientation=6),
        lambda: _split_exif(media.jpeg_with_exif(64, 48, orientation=8)),
        lambda: _with_segments(_encode(), _xmp(6)),
        lambda: _with_segments(media.jpeg_with_exif(64, 48, orientation=3), _xmp(6)),
        lambda: _mpo(),
        lambda: _mpo(gain_map=True),
    ],
    ids=[
        "rgb",
        "grey",
        "cmyk",
        "progressive",
        "exif-turned",
        "exif-in-two-segments",
        "xmp-orientation",
        "exif-orientation-over-xmp",
        "mpo",
        "ultra-hdr",
    ],
)
def test_a_probe_reads_what_pillow_reads(make: Callable[[], bytes]) -> None:
    data = make()
    with Image.open(io.BytesIO(data)) as img:
        expected = (img.format, img.mode, img.size, img.getexif().get(0x0112))

    found = jpeg.probe(data, info.MAX_IMAGE_PIXELS)

    orientation = found.metadata.get("orientation")
    size = (found.width, found.height)
    if orientation in {5, 6, 7, 8}:
        size = size[::-1]  # the probe reports it as viewers show it
    assert (found.metadata["format"], found.metadata["mode"], size, orientation) == expected


def _twelve_bit(data: bytes) -> bytes:
    return _damage(data, _segment(data, b"\xc0"), 12)


def _quantization_cut_short(data: bytes) -> bytes:
    start = data.index(b"\xff\xdb")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    body = data[start + 4 : start + 2 + length][:60]  # its first table is 65 bytes
    segment = b"\xff\xdb" + (len(body) + 2).to_bytes(2, "big") + body
    return data[:start] + segment + data[start + 2 + length :]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_twelve_bit, "cannot handle 12-bit layers"),
        (_quantization_cut_short, "quantization table .* cut short"),
        (lambda d: _with_segments(d, (0xE0, b"JFIF\x00")), "JFIF segment .* too short"),
        (lambda d: _with_segments(d, (0xEE, b"Adobe")), "Adobe segment .* too short"),
        (lambda d: d[:2] + b"\xff\x01" + d[2:], "invalid marker 0x01"),
    ],
    ids=["twelve-bit", "quantization-cut-short", "short-jfif", "short-adobe", "tem-marker"],
)
def test_what_pillow_refuses_to_open_a_probe_refuses(
    damage: Callable[[bytes], bytes], reason: str
) -> None:
    """The derive stage opens a stored JPEG with Pillow: a file Pillow's reader refuses (where
    it is stricter than libjpeg) is refused here too, not stored to fail there."""
    damaged = damage(_encode())
    with pytest.raises((OSError, SyntaxError)):
        Image.open(io.BytesIO(damaged), formats=["JPEG"])

    with pytest.raises(errors.CorruptMediaError, match=reason):
        jpeg.probe(damaged, info.MAX_IMAGE_PIXELS)


def test_a_jpeg_over_the_pixel_bound_is_too_large() -> None:
    with pytest.raises(errors.MediaTooLargeError, match="96x64 = 6144 pixels"):
        jpeg.probe(_encode(), 6000)


def test_any_damage_to_a_camera_jpeg_costs_only_a_media_error() -> None:
    """A probe runs in the daemon: damage anywhere, EXIF included, is a MediaError or nothing."""
    rng = random.Random(12)
    originals = [media.jpeg_with_exif(64, 48), _split_exif(media.jpeg_with_exif(32, 24)), _mpo()]
    for round_ in range(1500):
        data = bytearray(originals[round_ % len(originals)])
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data) // 3)] = rng.randrange(256)  # the headers, mostly
        with contextlib.suppress(errors.MediaError):
            jpeg.probe(bytes(data), info.MAX_IMAGE_PIXELS)


def test_exif_segments_are_joined_only_up_to_a_bound() -> None:
    """Extended EXIF continues over several segments; a file of little else must not cost its
    own size again in memory, so segments past jpeg.MAX_EXIF are left unread."""
    segment = (0xE1, b"Exif\x00\x00" + bytes(60_000))
    data = _with_segments(media.jpeg_with_exif(32, 24), *[segment] * 100)  # 6 MB of EXIF

    found = jpeg.check_structure(data)

    assert found.exif is not None
    assert jpeg.MAX_EXIF <= len(found.exif) < jpeg.MAX_EXIF + 65_536

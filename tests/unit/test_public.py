"""Public copies: GPS, serial numbers and maker notes out, every other byte as it was."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import ExifTags, Image

from mediad import errors
from mediad.media import public
from tests import media


def jpeg_with(exif: Image.Exif, **options: object) -> bytes:
    out = io.BytesIO()
    media.noise_image(16, 12).save(out, "JPEG", exif=exif, **options)
    return out.getvalue()


def serials_exif(endian: str = "<") -> Image.Exif:
    exif = media.camera_exif()
    exif.endian = endian
    exif[0xC62F] = "CAM-42"  # CameraSerialNumber (DNG)
    inner = exif.get_ifd(ExifTags.IFD.Exif)
    inner[ExifTags.Base.BodySerialNumber] = "BODY-42"
    inner[ExifTags.Base.MakerNote] = b"MAKER" * 10
    inner[ExifTags.Base.ExposureTime] = 0.5
    return exif


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little-endian", "big-endian"])
def test_a_jpeg_loses_gps_serials_and_maker_note_in_place(endian: str) -> None:
    """Both byte orders: the stripped entries leave their IFDs, their values are zeroed, and the
    file keeps its length and every other tag."""
    data = jpeg_with(serials_exif(endian))
    copy, stripped = public.strip_jpeg(data)
    assert sorted(stripped.removed) == sorted(
        ["gps", "camera_serial_number", "body_serial_number", "maker_note"]
    )
    assert len(copy) == len(data)
    for secret in (b"CAM-42", b"BODY-42", b"MAKER"):
        assert secret in data and secret not in copy
    with Image.open(io.BytesIO(copy)) as img:
        exif = img.getexif()
        assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {} and 0xC62F not in exif
        inner = exif.get_ifd(ExifTags.IFD.Exif)
        assert ExifTags.Base.BodySerialNumber not in inner
        assert ExifTags.Base.MakerNote not in inner
        assert float(inner[ExifTags.Base.ExposureTime]) == 0.5
        assert exif[ExifTags.Base.Model] == "EOS R5"
    start = data.index(b"\xff\xda")
    assert copy[start:] == data[start:]  # the picture data, untouched


def test_a_jpeg_with_nothing_to_strip_is_left_alone() -> None:
    """No GPS, serials, maker note or XMP GPS: nothing stripped, the bytes unchanged."""
    data = media.jpeg_with_exif(gps=None)
    copy, stripped = public.strip_jpeg(data)
    assert not stripped and copy == data


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_an_exif_block_that_cannot_be_followed_is_dropped_whole() -> None:
    """EXIF whose IFD offset points outside the block cannot be proven free of GPS: the whole
    segment goes, and the picture data stays."""
    data = bytearray(media.jpeg_with_exif())
    tiff = data.index(b"Exif\x00\x00") + 6
    order = "<" if data[tiff : tiff + 2] == b"II" else ">"
    data[tiff + 4 : tiff + 8] = struct.pack(order + "I", 0x7FFF_FFF0)
    copy, stripped = public.strip_jpeg(bytes(data))
    assert stripped.removed[0].startswith("exif (unreadable")
    assert b"Exif\x00\x00" not in copy
    with Image.open(io.BytesIO(copy)) as a, Image.open(io.BytesIO(bytes(data))) as b:
        assert a.tobytes() == b.tobytes()


def test_webp_loses_its_exif_chunk_and_flag() -> None:
    """The EXIF chunk goes, VP8X no longer announces it, and the RIFF size adds up."""
    out = io.BytesIO()
    media.noise_image(16, 12).save(out, "WEBP", exif=media.camera_exif(), lossless=True)
    data = out.getvalue()
    copy, stripped = public.strip_webp(data)
    assert stripped.removed == ["exif"]
    assert b"EXIF" not in copy and copy[20] & 0x08 == 0
    assert int.from_bytes(copy[4:8], "little") == len(copy) - 8
    with Image.open(io.BytesIO(copy)) as img, Image.open(io.BytesIO(data)) as original:
        assert img.tobytes() == original.tobytes()
        assert "exif" not in img.info


def test_png_loses_its_exif_chunk_only() -> None:
    """eXIf goes; every other chunk (here iCCP and tEXt) is kept byte for byte."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "kept")
    out = io.BytesIO()
    media.noise_image(16, 12).save(out, "PNG", exif=media.camera_exif(), pnginfo=info)
    data = out.getvalue()
    copy, stripped = public.strip_png(data)
    assert stripped.removed == ["exif"]
    assert b"eXIf" not in copy and b"Comment\x00kept" in copy
    chunk = data.index(b"eXIf") - 4
    assert len(data) - len(copy) == 12 + int.from_bytes(data[chunk : chunk + 4], "big")
    with Image.open(io.BytesIO(copy)) as img:
        assert dict(img.getexif()) == {}


def test_other_bytes_are_refused() -> None:
    """A file that is not the type it is said to be is refused, not copied."""
    with pytest.raises(errors.CorruptMediaError):
        public.strip_jpeg(media.png())
    with pytest.raises(errors.CorruptMediaError):
        public.strip_png(media.jpeg())

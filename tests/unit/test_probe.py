"""probe_file on real media made by Pillow and PyAV, and on bodies that are not media."""

from __future__ import annotations

import functools
import io
import json
import random
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import ImageFile

from mediad import errors
from mediad.media import probe
from tests import media


@pytest.fixture
def write(tmp_path: Path) -> Callable[[bytes], Path]:
    """Write bytes to a fresh file under tmp_path and return its path."""
    counter = iter(range(1_000_000))

    def _write(data: bytes) -> Path:
        path = tmp_path / f"body-{next(counter)}"
        path.write_bytes(data)
        return path

    return _write


def _canonical(encoder_name: str) -> str:
    return av.Codec(encoder_name, "w").canonical_name


# --- what each generator probes to --------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "mime_type", "extension", "kind", "size"),
    [
        (media.jpeg_with_exif, "image/jpeg", "jpg", "image", (64, 48)),
        (media.jpeg, "image/jpeg", "jpg", "image", (64, 48)),
        (lambda: media.png(40, 30), "image/png", "png", "image", (40, 30)),
        (media.animated_gif, "image/gif", "gif", "image", (64, 48)),
        (media.webp, "image/webp", "webp", "image", (64, 48)),
        (lambda: media.webp(animated=True), "image/webp", "webp", "image", (64, 48)),
        (lambda: media.image("BMP", 20, 10), "image/bmp", "bmp", "image", (20, 10)),
        (lambda: media.image("TIFF", 20, 10), "image/tiff", "tif", "image", (20, 10)),
        (media.mp4, "video/mp4", "mp4", "video", (64, 48)),
        (lambda: media.mp4(muxer="mov"), "video/quicktime", "mov", "video", (64, 48)),
        (media.webm, "video/webm", "webm", "video", (64, 48)),
        (media.audio_m4a, "audio/mp4", "m4a", "audio", (None, None)),
        (media.audio_mp3, "audio/mpeg", "mp3", "audio", (None, None)),
        (media.audio_ogg, "audio/ogg", "ogg", "audio", (None, None)),
        (media.pdf, "application/pdf", "pdf", "document", (None, None)),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_generated_media_probes_to_its_type(
    write: Callable[[bytes], Path],
    make: Callable[[], bytes],
    mime_type: str,
    extension: str,
    kind: str,
    size: tuple[int | None, int | None],
) -> None:
    """Each generator's output is sniffed to its mime type, extension, kind and size."""
    info = probe.probe_file(write(make()))

    assert (info.mime_type, info.extension, info.kind) == (mime_type, extension, kind)
    assert (info.width, info.height) == size
    json.dumps(info.metadata, allow_nan=False)


def test_kind_decides_the_store_folder(write: Callable[[bytes], Path]) -> None:
    """MediaInfo.folder maps each kind to the store's folder name."""
    assert probe.probe_file(write(media.png())).folder == "images"
    assert probe.probe_file(write(media.mp4())).folder == "videos"
    assert probe.probe_file(write(media.audio_mp3())).folder == "audio"
    assert probe.probe_file(write(media.pdf())).folder == "documents"


def test_generators_are_deterministic_per_seed() -> None:
    """The same seed gives the same bytes; another seed gives other bytes."""
    assert media.jpeg_with_exif(seed=1) == media.jpeg_with_exif(seed=1)
    assert media.jpeg_with_exif(seed=1) != media.jpeg_with_exif(seed=2)
    assert media.png(seed=1) != media.png(seed=2)
    assert media.mp4(seed=1) != media.mp4(seed=2)


@pytest.mark.parametrize("target", [50_000, 120_000, 300_000])
def test_sized_jpeg_is_near_its_target_and_decodes(
    write: Callable[[bytes], Path], target: int
) -> None:
    """sized_jpeg lands within 5% of the asked size and is a real JPEG."""
    data = media.sized_jpeg(target, seed=7)

    assert abs(len(data) - target) <= target * 0.05
    assert probe.probe_file(write(data)).mime_type == "image/jpeg"


# --- images -------------------------------------------------------------------------------------


def test_exif_camera_time_and_place(write: Callable[[bytes], Path]) -> None:
    """EXIF make, model, DateTimeOriginal and GPS (north/east) come out as plain JSON values."""
    data = media.jpeg_with_exif(
        make="Canon", model="EOS R5", taken_at=datetime(2024, 5, 6, 7, 8, 9), gps=(48.8584, 2.2945)
    )

    metadata = probe.probe_file(write(data)).metadata

    assert metadata["camera_make"] == "Canon"
    assert metadata["camera_model"] == "EOS R5"
    assert metadata["taken_at"] == "2024-05-06T07:08:09"
    assert metadata["gps"]["latitude"] == pytest.approx(48.8584, abs=1e-6)
    assert metadata["gps"]["longitude"] == pytest.approx(2.2945, abs=1e-6)
    assert "altitude" not in metadata["gps"]
    assert metadata["orientation"] == 1


def test_exif_gps_south_and_west_are_negative(write: Callable[[bytes], Path]) -> None:
    """S and W refs make latitude and longitude negative; altitude ref 1 means below sea level."""
    data = media.jpeg_with_exif(gps=(-33.8568, -151.2153), altitude=-12.5)

    gps = probe.probe_file(write(data)).metadata["gps"]

    assert gps["latitude"] == pytest.approx(-33.8568, abs=1e-6)
    assert gps["longitude"] == pytest.approx(-151.2153, abs=1e-6)
    assert gps["altitude"] == pytest.approx(-12.5)


def test_jpeg_without_exif_has_no_camera_fields(write: Callable[[bytes], Path]) -> None:
    """A JPEG without EXIF probes fine and claims no camera, time or place."""
    metadata = probe.probe_file(write(media.jpeg())).metadata

    assert not {"camera_make", "camera_model", "taken_at", "gps", "orientation"} & set(metadata)


@pytest.mark.parametrize(
    ("orientation", "size"), [(1, (64, 48)), (3, (64, 48)), (6, (48, 64)), (8, (48, 64))]
)
def test_exif_orientation_turns_the_reported_size(
    write: Callable[[bytes], Path], orientation: int, size: tuple[int, int]
) -> None:
    """Orientations 5-8 swap width and height; the others leave them as stored."""
    info = probe.probe_file(write(media.jpeg_with_exif(64, 48, orientation=orientation)))

    assert (info.width, info.height) == size
    assert info.metadata["orientation"] == orientation


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_of_pictures_pillow_opens_is_read_too(
    write: Callable[[bytes], Path], fmt: str
) -> None:
    """A PNG's or WebP's EXIF chunk, and a TIFF's own directory, give the same camera, time and
    place as a JPEG's. A TIFF is turned by its orientation as Pillow opens it, so its size is
    the turned one and no orientation is left to apply; the others report theirs."""
    exif_block = media.camera_exif(orientation=6).tobytes()
    data = media.encoded(media.noise_image(64, 48, seed=2), fmt, exif=exif_block)

    info = probe.probe_file(write(data))

    assert info.metadata["camera_make"] == "Canon"
    assert info.metadata["taken_at"] == "2024-05-06T07:08:09"
    assert info.metadata["gps"]["latitude"] == pytest.approx(48.8584, abs=1e-6)
    assert (info.width, info.height) == (48, 64)
    assert info.metadata.get("orientation") == (None if fmt == "TIFF" else 6)


def test_animated_gif_frame_count(write: Callable[[bytes], Path]) -> None:
    """An animated GIF reports its frame count and animated=True."""
    metadata = probe.probe_file(write(media.animated_gif(frames=5))).metadata

    assert (metadata["frame_count"], metadata["animated"]) == (5, True)


def test_animated_webp_frame_count(write: Callable[[bytes], Path]) -> None:
    """An animated WebP reports its frame count; a still one reports one frame, not animated."""
    animated = probe.probe_file(write(media.webp(animated=True, frames=4))).metadata
    still = probe.probe_file(write(media.webp())).metadata

    assert (animated["frame_count"], animated["animated"]) == (4, True)
    assert (still["frame_count"], still["animated"]) == (1, False)


def test_apng_frame_count(write: Callable[[bytes], Path]) -> None:
    """An animated PNG reports its frame count, the still image before its frames included."""
    animated = probe.probe_file(write(media.apng(4))).metadata
    with_default = probe.probe_file(write(media.apng(4, default_image=True))).metadata
    still = probe.probe_file(write(media.png())).metadata

    assert (animated["frame_count"], animated["animated"]) == (4, True)
    assert (with_default["frame_count"], with_default["animated"]) == (4, True)
    assert (still["frame_count"], still["animated"]) == (1, False)


def test_still_gif_is_one_frame(write: Callable[[bytes], Path]) -> None:
    """A GIF of one frame reports one frame, not animated."""
    metadata = probe.probe_file(write(media.animated_gif(1))).metadata

    assert (metadata["frame_count"], metadata["animated"]) == (1, False)


@functools.cache
def _gif_of_3000_frames() -> bytes:
    """3,000 distinct frames of 64x64 (about 19 MB): made once, for the tests that need it."""
    return media.animated_gif(3000, 64, 64, duration_ms=40)


def test_a_gif_of_3000_frames_is_judged_from_its_first(
    write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GIF of thousands of frames is proven from its first frame, decoded, and its structure,
    walked: it reports every frame, and Pillow decodes one."""
    decoded: list[int] = []
    load = ImageFile.ImageFile.load

    def counting_load(img: ImageFile.ImageFile) -> Any:
        if img.tile:  # a frame still to decode
            decoded.append(img.tell())
        return load(img)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    metadata = probe.probe_file(write(_gif_of_3000_frames())).metadata

    assert (metadata["frame_count"], metadata["animated"]) == (3000, True)
    assert decoded == [0]


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _cut_before_last_frame(data: bytes) -> bytes:
    """A GIF cut between frames: up to the graphic control extension of its last frame."""
    return data[: data.rindex(b"\x21\xf9\x04")]


@pytest.mark.parametrize(
    "make",
    [
        lambda: media.animated_gif(6)[:-1],
        lambda: _cut_before_last_frame(media.animated_gif(6)),
        lambda: _cut_before_last_frame(_gif_of_3000_frames()),
        lambda: _half(media.animated_gif(6)),
        lambda: media.apng(6)[:-12],
        lambda: _half(media.apng(6)),
    ],
    ids=[
        "gif-without-trailer",
        "gif-cut-between-frames",
        "3000-frame-gif-cut-between-frames",
        "gif-cut-in-a-frame",
        "apng-without-iend",
        "apng-cut-in-a-frame",
    ],
)
@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "from-file"])
def test_an_animation_cut_short_is_corrupt(
    write: Callable[[bytes], Path], make: Callable[[], bytes], in_memory: bool
) -> None:
    """An animated GIF or APNG cut short, even between two frames (where Pillow sees a shorter
    animation), is corrupt_media, from memory as from its file."""
    body = make()

    with pytest.raises(errors.CorruptMediaError, match="image is damaged: it ") as caught:
        probe.probe_file(write(body), data=body if in_memory else None)

    assert caught.value.error_code == "corrupt_media"


def test_image_over_the_pixel_bound_is_too_large(write: Callable[[bytes], Path]) -> None:
    """An image with more pixels than max_image_pixels fails with too_large before decoding."""
    with pytest.raises(errors.MediaTooLargeError) as caught:
        probe.probe_file(write(media.png(64, 48)), max_image_pixels=1000)

    assert caught.value.error_code == "too_large"
    assert isinstance(caught.value, errors.PermanentError)
    assert not isinstance(caught.value, errors.FetchError)


def test_avif_is_an_unsupported_type(write: Callable[[bytes], Path]) -> None:
    """A real AVIF is media outside the allowlist: unsupported_type, not corrupt nor not_media."""
    with pytest.raises(errors.UnsupportedMediaError) as caught:
        probe.probe_file(write(media.image("AVIF")))

    assert caught.value.error_code == "unsupported_type"


# --- video and audio ----------------------------------------------------------------------------


def test_mp4_duration_codec_fps_and_size(write: Callable[[bytes], Path]) -> None:
    """An MP4 reports about a second, its video codec, 10 fps and 64x48."""
    info = probe.probe_file(write(media.mp4(seconds=1.0, width=64, height=48, fps=10)))

    assert info.duration_seconds == pytest.approx(1.0, abs=0.1)
    assert info.metadata["video_codec"] == _canonical(media.encoder("libx264", "h264", "mpeg4"))
    assert info.metadata["fps"] == pytest.approx(10.0)
    assert (info.width, info.height) == (64, 48)
    assert "audio_codec" not in info.metadata


def test_webm_duration_codec_fps_and_size(write: Callable[[bytes], Path]) -> None:
    """A WebM reports about a second, VP8/VP9, its fps and size."""
    info = probe.probe_file(write(media.webm(seconds=1.0, width=96, height=64, fps=15)))

    assert info.duration_seconds == pytest.approx(1.0, abs=0.1)
    assert info.metadata["video_codec"] == _canonical(media.encoder("libvpx", "libvpx-vp9"))
    assert info.metadata["fps"] == pytest.approx(15.0)
    assert (info.width, info.height) == (96, 64)


def test_video_with_audio_reports_both_codecs(write: Callable[[bytes], Path]) -> None:
    """A video's audio track adds its codec, sample rate and channels."""
    info = probe.probe_file(write(media.mp4(audio=True)))

    assert info.kind == "video"
    assert info.metadata["audio_codec"] == "aac"
    assert info.metadata["sample_rate"] == 48_000
    assert info.metadata["channels"] == 1


def test_rotated_video_swaps_width_and_height(write: Callable[[bytes], Path]) -> None:
    """A display matrix of 90 degrees reports the video as players show it: portrait."""
    info = probe.probe_file(write(media.mp4(width=64, height=48, rotation=90)))

    assert (info.width, info.height) == (48, 64)
    assert info.metadata["rotation"] == 90


def test_video_creation_time_and_location(write: Callable[[bytes], Path]) -> None:
    """An MP4's creation_time and ISO 6709 location become taken_at and gps."""
    data = media.mp4(creation_time=datetime(2024, 5, 6, 7, 8, 9), location="+48.8584-002.2945/")

    metadata = probe.probe_file(write(data)).metadata

    assert metadata["taken_at"] == "2024-05-06T07:08:09+00:00"
    assert metadata["gps"] == {"latitude": 48.8584, "longitude": -2.2945}


@pytest.mark.parametrize(
    ("make", "encoder", "codec"),
    [(media.mp4, "libsvtav1", "av1"), (media.webm, "libvpx-vp9", "vp9")],
    ids=["av1-mp4", "vp9-webm"],
)
def test_modern_codecs_decode(
    write: Callable[[bytes], Path], make: Callable[..., bytes], encoder: str, codec: str
) -> None:
    """AV1 in MP4 and VP9 in WebM, as platforms now serve them, decode as video."""
    try:
        av.Codec(encoder, "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip(f"this PyAV build has no {encoder} encoder")

    info = probe.probe_file(write(make(width=64, height=64, codec=encoder)))

    assert (info.kind, info.metadata["video_codec"], info.width) == ("video", codec, 64)


def test_mp4_brand_unknown_to_filetype_is_still_probed(write: Callable[[bytes], Path]) -> None:
    """A fragmented MP4 whose ftyp brand filetype does not know (isml) is still a video."""
    info = probe.probe_file(write(media.mp4(muxer="ismv")))

    assert (info.mime_type, info.kind, info.width) == ("video/mp4", "video", 64)


@pytest.mark.parametrize(
    ("make", "codec"),
    [(media.audio_m4a, "aac"), (media.audio_mp3, "mp3"), (media.audio_ogg, "opus")],
    ids=["m4a", "mp3", "ogg"],
)
def test_audio_duration_and_codec(
    write: Callable[[bytes], Path], make: Callable[..., bytes], codec: str
) -> None:
    """Audio files report their own length (here 2.5 s), codec and channel count."""
    info = probe.probe_file(write(make(2.5, channels=2)))

    assert info.duration_seconds == pytest.approx(2.5, abs=0.1)
    assert info.metadata["audio_codec"] == codec
    assert info.metadata["channels"] == 2
    assert (info.width, info.height) == (None, None)


# --- not media ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<!DOCTYPE html>\n<html><head><title>Login</title></head></html>", "HTML"),
        (b"\n  <html lang='en'><body>Not found</body></html>", "HTML"),
        (json.dumps({"error": "expired", "code": 190}).encode(), "JSON"),
        (b'[{"id": 1}]', "JSON"),
        (b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "XML"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        ("Rate limit exceeded. Réessayez plus tard.\n".encode(), "plain text"),
        (b"", "empty"),
    ],
    ids=["html", "html-indented", "json", "json-array", "xml", "svg", "text", "empty"],
)
def test_text_bodies_are_not_media(write: Callable[[bytes], Path], body: bytes, says: str) -> None:
    """HTML, JSON, XML, SVG, plain text and empty bodies are not_media, saying what they were."""
    with pytest.raises(errors.NotMediaError) as caught:
        probe.probe_file(write(body))

    assert caught.value.error_code == "not_media"
    assert says in str(caught.value)
    assert isinstance(caught.value, errors.PermanentError)
    assert not isinstance(caught.value, errors.FetchError)


def test_not_media_message_names_the_declared_type(write: Callable[[bytes], Path]) -> None:
    """The declared type is not trusted but is named, so operators see the lie."""
    with pytest.raises(errors.NotMediaError, match="declared as 'image/jpeg'"):
        probe.probe_file(write(b"<html>blocked</html>"), declared_type="image/jpeg")


def test_unknown_binary_is_not_media(write: Callable[[bytes], Path]) -> None:
    """Random bytes with no magic number are not_media."""
    body = random.Random(3).randbytes(4096)

    with pytest.raises(errors.NotMediaError, match="unrecognised binary"):
        probe.probe_file(write(b"\x00\x01" + body))


def test_zip_archive_is_not_media(write: Callable[[bytes], Path]) -> None:
    """A known non-media format (a ZIP archive) is not_media, naming its type."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("a.txt", "hello")

    with pytest.raises(errors.NotMediaError, match="application/zip"):
        probe.probe_file(write(buf.getvalue()))


# --- corrupt media ------------------------------------------------------------------------------


def _assert_corrupt(path: Path) -> errors.CorruptMediaError:
    with pytest.raises(errors.CorruptMediaError) as caught:
        probe.probe_file(path)
    assert caught.value.error_code == "corrupt_media"
    assert "\n" not in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert str(path) not in str(caught.value)
    return caught.value


def test_half_a_jpeg_is_corrupt(write: Callable[[bytes], Path]) -> None:
    """A JPEG cut to half its bytes is corrupt_media: the decode notices the missing data."""
    data = media.jpeg_with_exif(256, 192)

    error = _assert_corrupt(write(data[: len(data) // 2]))

    assert "JPEG" in str(error)


@pytest.mark.parametrize("source", ["in-memory", "read-whole", "mapped"])
def test_a_jpeg_with_a_zeroed_tail_is_corrupt(
    write: Callable[[bytes], Path], source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last third of the body never arrived and reads as zeros: libjpeg would decode it
    (grey at the bottom); the structure walk finds no end of image. A body the caller still
    holds is probed in memory, a photo's file is read whole, and a file over READ_WHOLE is
    mapped: each way finds the damage."""
    data = bytearray(media.jpeg_with_exif(256, 192))
    third = len(data) // 3
    data[-third:] = bytes(third)
    body = bytes(data)
    if source == "mapped":
        monkeypatch.setattr(probe, "READ_WHOLE", len(body) - 1)

    with pytest.raises(errors.CorruptMediaError) as caught:
        probe.probe_file(write(body), data=body if source == "in-memory" else None)

    assert "JPEG image is damaged: it ends at byte" in str(caught.value)
    assert caught.value.error_code == "corrupt_media"


@pytest.mark.parametrize("make", [media.jpeg_with_exif, media.png, media.animated_gif])
def test_an_image_over_read_whole_is_probed_from_its_file_alike(
    write: Callable[[bytes], Path], make: Callable[[], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A picture too big to be read whole (mapped for its walk, read by Pillow from the file)
    gives the same answer as one read whole: its size, type and every metadata field."""
    path = write(make())
    whole = probe.probe_file(path)
    monkeypatch.setattr(probe, "READ_WHOLE", path.stat().st_size - 1)

    assert probe.probe_file(path) == whole


def test_png_signature_then_random_bytes_is_corrupt(write: Callable[[bytes], Path]) -> None:
    """The PNG signature followed by noise is sniffed as PNG, and no decoder accepts it."""
    signature = media.png()[:8]

    _assert_corrupt(write(signature + random.Random(5).randbytes(2048)))


def test_half_a_png_is_corrupt(write: Callable[[bytes], Path]) -> None:
    """A PNG cut short fails verification."""
    data = media.png(128, 96)

    _assert_corrupt(write(data[: len(data) // 2]))


def test_mp4_header_then_garbage_is_corrupt(write: Callable[[bytes], Path]) -> None:
    """An MP4's ftyp box followed by noise is sniffed as MP4 but has no playable movie."""
    header = media.mp4()[:32]

    _assert_corrupt(write(header + random.Random(6).randbytes(4096)))


def test_webm_header_then_garbage_is_corrupt(write: Callable[[bytes], Path]) -> None:
    """A WebM's EBML header followed by noise is corrupt_media."""
    header = media.webm()[:64]

    _assert_corrupt(write(header + random.Random(7).randbytes(4096)))


def test_truncated_pdf_is_corrupt(write: Callable[[bytes], Path]) -> None:
    """A PDF without its %%EOF trailer was cut short: corrupt_media."""
    data = media.pdf()

    _assert_corrupt(write(data[: len(data) // 2]))


# --- probing from memory ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        media.jpeg_with_exif,
        lambda: media.png(40, 30),
        media.animated_gif,
        lambda: media.webp(animated=True),
        lambda: media.image("TIFF", 20, 10),
        media.mp4,
        media.pdf,
    ],
    ids=["jpeg-exif", "png", "gif", "webp", "tiff", "mp4", "pdf"],
)
def test_probing_the_bytes_in_memory_says_what_the_file_says(
    write: Callable[[bytes], Path], make: Callable[[], bytes]
) -> None:
    """probe_file given the bytes it already holds (data=) finds what reading the file finds."""
    data = make()
    path = write(data)

    assert probe.probe_file(path, data=data) == probe.probe_file(path)


@pytest.mark.parametrize(
    "make",
    [lambda: media.jpeg_with_exif(256, 192), lambda: media.png(128, 96)],
    ids=["jpeg", "png"],
)
def test_half_an_image_in_memory_is_corrupt(
    write: Callable[[bytes], Path], make: Callable[[], bytes]
) -> None:
    """From memory, too, a picture cut in half fails its decode."""
    half = make()
    half = half[: len(half) // 2]

    with pytest.raises(errors.CorruptMediaError):
        probe.probe_file(write(half), data=half)


def test_text_in_memory_is_not_media(write: Callable[[bytes], Path]) -> None:
    """From memory, an HTML page is still not_media."""
    body = b"<html>blocked</html>"

    with pytest.raises(errors.NotMediaError, match="HTML"):
        probe.probe_file(write(body), data=body)

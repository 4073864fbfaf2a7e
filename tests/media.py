"""Generators of real media files for tests: every byte comes out of Pillow or PyAV encoders."""

from __future__ import annotations

import functools
import io
import math
import random
import struct
import zlib
from collections.abc import Sequence
from datetime import datetime
from fractions import Fraction

import av
from PIL import ExifTags, Image, ImageDraw, ImageFilter, ImageFont, TiffImagePlugin

TAKEN_AT = datetime(2024, 5, 6, 7, 8, 9)
EIFFEL_TOWER = (48.8584, 2.2945)


# --- images -------------------------------------------------------------------------------------


def noise_image(
    width: int = 64, height: int = 48, *, seed: int = 0, mode: str = "RGB"
) -> Image.Image:
    """An image of seeded random pixels: distinct per seed, and incompressible."""
    bands = Image.getmodebands(mode)
    rng = random.Random(seed)
    return Image.frombytes(mode, (width, height), rng.randbytes(width * height * bands))


def image(fmt: str, width: int = 64, height: int = 48, *, seed: int = 0, **save: object) -> bytes:
    """Any still format Pillow can write ("PNG", "BMP", "TIFF", "AVIF", "PDF", ...)."""
    buf = io.BytesIO()
    noise_image(width, height, seed=seed).save(buf, fmt, **save)
    return buf.getvalue()


def jpeg(width: int = 64, height: int = 48, *, seed: int = 0, quality: int = 90) -> bytes:
    """A baseline JPEG without EXIF."""
    return image("JPEG", width, height, seed=seed, quality=quality)


def jpeg_with_exif(
    width: int = 64,
    height: int = 48,
    *,
    make: str | None = "Canon",
    model: str | None = "EOS R5",
    taken_at: datetime | None = TAKEN_AT,
    gps: tuple[float, float] | None = EIFFEL_TOWER,
    altitude: float | None = None,
    orientation: int = 1,
    seed: int = 0,
    quality: int = 90,
) -> bytes:
    """A camera-style JPEG: Make/Model/Orientation in IFD0, DateTimeOriginal, a GPS IFD."""
    exif = camera_exif(
        make=make,
        model=model,
        taken_at=taken_at,
        gps=gps,
        altitude=altitude,
        orientation=orientation,
    )
    buf = io.BytesIO()
    noise_image(width, height, seed=seed).save(buf, "JPEG", exif=exif, quality=quality)
    return buf.getvalue()


def camera_exif(
    *,
    make: str | None = "Canon",
    model: str | None = "EOS R5",
    taken_at: datetime | None = TAKEN_AT,
    gps: tuple[float, float] | None = EIFFEL_TOWER,
    altitude: float | None = None,
    orientation: int = 1,
) -> Image.Exif:
    """The EXIF block a camera writes, for any JPEG a caller encodes (`jpeg_with_exif`'s)."""
    exif = Image.Exif()
    if make is not None:
        exif[ExifTags.Base.Make] = make
    if model is not None:
        exif[ExifTags.Base.Model] = model
    exif[ExifTags.Base.Orientation] = orientation
    if taken_at is not None:
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
        exif_ifd[ExifTags.Base.DateTimeOriginal] = taken_at.strftime("%Y:%m:%d %H:%M:%S")
        exif_ifd[ExifTags.Base.DateTimeDigitized] = taken_at.strftime("%Y:%m:%d %H:%M:%S")
    if gps is not None:
        latitude, longitude = gps
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps_ifd[ExifTags.GPS.GPSVersionID] = b"\x02\x03\x00\x00"
        gps_ifd[ExifTags.GPS.GPSLatitudeRef] = "N" if latitude >= 0 else "S"
        gps_ifd[ExifTags.GPS.GPSLatitude] = _dms(latitude)
        gps_ifd[ExifTags.GPS.GPSLongitudeRef] = "E" if longitude >= 0 else "W"
        gps_ifd[ExifTags.GPS.GPSLongitude] = _dms(longitude)
        if altitude is not None:
            gps_ifd[ExifTags.GPS.GPSAltitudeRef] = b"\x00" if altitude >= 0 else b"\x01"
            gps_ifd[ExifTags.GPS.GPSAltitude] = _rational(abs(altitude), 100)
    return exif


def _rational(value: float, denominator: int) -> TiffImagePlugin.IFDRational:
    return TiffImagePlugin.IFDRational(round(value * denominator), denominator)


def _dms(decimal: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
    """Decimal degrees as EXIF's rationals (degrees, minutes, seconds); the ref holds the sign."""
    value = abs(decimal)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return (
        TiffImagePlugin.IFDRational(degrees, 1),
        TiffImagePlugin.IFDRational(minutes, 1),
        _rational(seconds, 10_000),
    )


def png(width: int = 64, height: int = 48, *, seed: int = 0) -> bytes:
    """An RGB PNG."""
    return image("PNG", width, height, seed=seed)


def huge_png(width: int = 13000, height: int = 13000, *, seed: int = 0) -> bytes:
    """A large RGBA PNG that is small on the wire (a decompression bomb within the pixel limit),
    written row by row so making it never holds its pixels: a few stripes of colour on black,
    compressed at level 9."""
    rng = random.Random(seed)
    stripe = bytes([0]) + rng.randbytes(4) * width
    blank = bytes(1 + 4 * width)
    packer = zlib.compressobj(9)
    idat = bytearray()
    for y in range(height):
        idat += packer.compress(stripe if y % 1024 < 4 else blank)
    idat += packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", bytes(idat))
        + chunk(b"IEND", b"")
    )


def _palette_frames(frames: int, width: int, height: int, seed: int) -> list[Image.Image]:
    # Palette frames straight from random indices: no quantisation, and no two frames alike,
    # so Pillow cannot merge consecutive duplicates away.
    rng = random.Random(seed)
    palette = list(rng.randbytes(256 * 3))
    out = []
    for _ in range(frames):
        frame = Image.frombytes("P", (width, height), rng.randbytes(width * height))
        frame.putpalette(palette)
        out.append(frame)
    return out


def animated_gif(
    frames: int = 3,
    width: int = 64,
    height: int = 48,
    *,
    seed: int = 0,
    duration_ms: int = 100,
    **save: object,
) -> bytes:
    """A looping GIF of `frames` distinct frames (one frame gives a still GIF); `save` passes
    Pillow's options (comment, transparency, disposal...)."""
    first, *rest = _palette_frames(frames, width, height, seed)
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=rest, duration=duration_ms, loop=0, **save)
    return buf.getvalue()


def apng(
    frames: int = 3,
    width: int = 64,
    height: int = 48,
    *,
    seed: int = 0,
    duration_ms: int = 100,
    mode: str = "RGB",
    **save: object,
) -> bytes:
    """An animated PNG of `frames` distinct frames of noise; `save` passes Pillow's options
    (default_image=True: the still image shown by viewers without APNG is not a frame)."""
    images = [noise_image(width, height, seed=seed + i, mode=mode) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(
        buf, "PNG", save_all=True, append_images=images[1:], duration=duration_ms, **save
    )
    return buf.getvalue()


def webp(
    width: int = 64,
    height: int = 48,
    *,
    animated: bool = False,
    frames: int = 3,
    seed: int = 0,
    duration_ms: int = 100,
    lossless: bool = False,
) -> bytes:
    """A still or animated WebP."""
    buf = io.BytesIO()
    if not animated:
        noise_image(width, height, seed=seed).save(buf, "WEBP", lossless=lossless, quality=80)
        return buf.getvalue()
    first, *rest = [f.convert("RGB") for f in _palette_frames(frames, width, height, seed)]
    first.save(
        buf,
        "WEBP",
        save_all=True,
        append_images=rest,
        duration=duration_ms,
        loop=0,
        lossless=lossless,
        quality=80,
    )
    return buf.getvalue()


def pdf(width: int = 64, height: int = 48, *, seed: int = 0) -> bytes:
    """A one-page PDF holding an image."""
    return image("PDF", width, height, seed=seed)


# JPEG of RGB noise at quality 85 costs about this many bytes per pixel; only a first guess.
_NOISE_JPEG_BYTES_PER_PIXEL = 2.6


def sized_jpeg(target_bytes: int, seed: int = 0, *, tolerance: float = 0.03) -> bytes:
    """A decodable JPEG within `tolerance` (relative) of `target_bytes`, made of noise."""
    width = 256
    height = max(8, round(target_bytes / _NOISE_JPEG_BYTES_PER_PIXEL / width))
    data = b""
    for _ in range(6):
        data = jpeg(width, height, seed=seed, quality=85)
        error = len(data) / target_bytes
        if abs(error - 1) <= tolerance:
            break
        # Size grows linearly with rows of noise, apart from the fixed header.
        height = max(8, round(height / error))
    return data


# --- pictures with text, for analysis -----------------------------------------------------------


def text_picture(
    text: str,
    width: int = 1080,
    height: int = 720,
    *,
    size: int = 72,
    color: str | tuple[int, int, int] = "black",
    background: str | tuple[int, int, int] = "white",
    position: tuple[int, int] = (60, 300),
) -> Image.Image:
    """`text` rendered with Pillow's scalable default font on a plain background."""
    picture = Image.new("RGB", (width, height), background)
    ImageDraw.Draw(picture).text(position, text, fill=color, font=ImageFont.load_default(size=size))
    return picture


def photo_like(width: int = 1080, height: int = 720, *, seed: int = 0) -> Image.Image:
    """Smooth colour blotches, like an out-of-focus photo: seeded noise upscaled and blurred."""
    cell = 24
    small = noise_image(max(2, width // cell), max(2, height // cell), seed=seed)
    return small.resize((width, height), Image.Resampling.BICUBIC).filter(
        ImageFilter.GaussianBlur(3)
    )


def photo_with_text(
    lines: Sequence[str],
    width: int = 1080,
    height: int = 720,
    *,
    seed: int = 0,
    size: int = 56,
) -> Image.Image:
    """A photo-like background with `lines` in white outlined in black, as memes carry them."""
    picture = photo_like(width, height, seed=seed)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=size)
    y = height // 10
    for line in lines:
        draw.text(
            (width // 20, y),
            line,
            font=font,
            fill="white",
            stroke_width=max(2, size // 12),
            stroke_fill="black",
        )
        y += round(size * 1.6)
    return picture


def encoded(picture: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    """A picture encoded as `fmt` ("PNG", "JPEG", ...) with Pillow's `save` options."""
    buf = io.BytesIO()
    picture.save(buf, fmt, **save)
    return buf.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A small real PNG whose header (IHDR, CRC mended) claims `width` x `height` pixels."""
    data = bytearray(png(8, 8))
    # The signature (8 bytes), then IHDR: length (4), type (4), width, height (4 each)...
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def captioned_mp4(
    captions: Sequence[str],
    *,
    seconds_per_caption: float = 1.0,
    width: int = 320,
    height: int = 240,
    fps: int = 4,
    size: int = 40,
    rotation: int = 0,
    corner_mark: bool = False,
) -> bytes:
    """An H.264 (else MPEG-4 part 2) MP4 showing each caption in turn, black on white, for
    `seconds_per_caption` each, `width` x `height` as shown.

    With a `rotation` (counter-clockwise degrees), frames are stored turned the other way and
    the display matrix turns them upright, as phones store portrait video. `corner_mark` puts
    a red square in the top-left corner of the picture as shown.
    """
    if width % 2 or height % 2:
        raise ValueError("yuv420p needs even width and height")
    codec = encoder("libx264", "h264", "mpeg4")
    frames_each = max(1, round(seconds_per_caption * fps))
    stored: tuple[int, int] = (height, width) if rotation % 180 == 90 else (width, height)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = stored
        stream.pix_fmt = "yuv420p"
        stream.options = dict(_FAST_ENCODING.get(codec, {}))
        if rotation:
            stream.set_display_rotation(rotation)
        index = 0
        for caption in captions:
            shown = text_picture(
                caption, width, height, size=size, position=(width // 10, height // 3)
            )
            if corner_mark:
                ImageDraw.Draw(shown).rectangle((0, 0, width // 8, height // 8), fill="red")
            picture = shown.rotate(-rotation, expand=True).convert("RGBA")
            for _ in range(frames_each):
                frame = av.VideoFrame.from_bytes(picture.tobytes(), *stored, format="rgba")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
                index += 1
        container.mux(stream.encode(None))
    return buf.getvalue()


# --- video and audio ----------------------------------------------------------------------------


@functools.cache
def encoder(*candidates: str) -> str:
    """The first of `candidates` this PyAV build can encode with."""
    for name in candidates:
        try:
            av.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise RuntimeError(f"none of the encoders {candidates} is available in this PyAV build")


def mp4(
    seconds: float = 1.0,
    width: int = 64,
    height: int = 48,
    fps: int = 10,
    *,
    seed: int = 0,
    audio: bool = False,
    rotation: int = 0,
    creation_time: datetime | None = None,
    location: str | None = None,
    muxer: str = "mp4",
    codec: str | None = None,
) -> bytes:
    """An H.264 (else MPEG-4 part 2) MP4; `location` is ISO 6709, e.g. "+48.8584+002.2945/".

    `muxer` picks a sibling of the mp4 muxer: "mov" (QuickTime), "ismv" (fragmented, brand isml);
    `codec` an encoder other than the default, e.g. "libsvtav1" for AV1.
    """
    metadata = {}
    if creation_time is not None:
        metadata["creation_time"] = creation_time.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    if location is not None:
        metadata["location"] = location
    codec = codec or encoder("libx264", "h264", "mpeg4")
    return _video(
        muxer,
        codec,
        _FAST_ENCODING.get(codec, {}),
        audio_codec=encoder("aac") if audio else None,
        seconds=seconds,
        width=width,
        height=height,
        fps=fps,
        seed=seed,
        rotation=rotation,
        metadata=metadata,
    )


def webm(
    seconds: float = 1.0,
    width: int = 64,
    height: int = 48,
    fps: int = 10,
    *,
    seed: int = 0,
    audio: bool = False,
    codec: str | None = None,
) -> bytes:
    """A VP8 (else VP9) WebM, with Opus audio when asked; `codec` picks another encoder."""
    codec = codec or encoder("libvpx", "libvpx-vp9")
    return _video(
        "webm",
        codec,
        _FAST_ENCODING.get(codec, {}),
        audio_codec=encoder("libopus", "opus") if audio else None,
        seconds=seconds,
        width=width,
        height=height,
        fps=fps,
        seed=seed,
    )


# The quickest settings of each encoder: test media need to exist, not to look good.
_FAST_ENCODING: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libsvtav1": {"preset": "12"},
}


def _video(
    container_format: str,
    codec: str,
    options: dict[str, str],
    *,
    audio_codec: str | None,
    seconds: float,
    width: int,
    height: int,
    fps: int,
    seed: int,
    rotation: int = 0,
    metadata: dict[str, str] | None = None,
) -> bytes:
    if width % 2 or height % 2:
        raise ValueError("yuv420p needs even width and height")
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as container:
        container.metadata.update(metadata or {})
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = dict(options)
        if rotation:
            stream.set_display_rotation(rotation)
        audio_stream: av.AudioStream | None = None
        if audio_codec is not None:
            sample_rate = 48_000
            added = container.add_stream(audio_codec, rate=sample_rate)
            assert isinstance(added, av.AudioStream)
            added.layout = "mono"
            audio_stream = added
        base = noise_image(width, height, seed=seed)
        for index in range(round(seconds * fps)):
            # Each frame is the same noise rolled sideways: distinct frames, cheap to make.
            shifted = Image.new("RGBA", (width, height))
            shift = index % width
            shifted.paste(base.crop((shift, 0, width, height)), (0, 0))
            shifted.paste(base.crop((0, 0, shift, height)), (width - shift, 0))
            frame = av.VideoFrame.from_bytes(shifted.tobytes(), width, height, format="rgba")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_stream is not None:
            for sound in _sine_frames(seconds, 48_000, channels=1, frequency=440 + seed):
                container.mux(audio_stream.encode(sound))
            container.mux(audio_stream.encode(None))
    return buf.getvalue()


def _sine_frames(
    seconds: float, sample_rate: int, *, channels: int, frequency: float
) -> list[av.AudioFrame]:
    layout = "mono" if channels == 1 else "stereo"
    total = round(seconds * sample_rate)
    # One whole period, repeated: building every sample in Python would dominate the run time.
    period = max(2, round(sample_rate / frequency))
    cycle = b"".join(
        struct.pack("<h", round(8000 * math.sin(2 * math.pi * k / period))) * channels
        for k in range(period)
    )
    pcm = cycle * (total // period + 1)
    frame_bytes = 2 * channels
    frames = []
    for start in range(0, total, 1024):
        count = min(1024, total - start)
        frame = av.AudioFrame(format="s16", layout=layout, samples=count)
        # s16 is packed: one plane, channels interleaved.
        frame.planes[0].update(pcm[start * frame_bytes : (start + count) * frame_bytes])
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        frames.append(frame)
    return frames


def _audio(
    container_format: str,
    codecs: Sequence[str],
    *,
    seconds: float,
    sample_rate: int,
    channels: int,
    seed: int,
) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as container:
        stream = container.add_stream(encoder(*codecs), rate=sample_rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono" if channels == 1 else "stereo"
        for frame in _sine_frames(seconds, sample_rate, channels=channels, frequency=440 + seed):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def audio_m4a(
    seconds: float = 1.0, *, sample_rate: int = 44_100, channels: int = 1, seed: int = 0
) -> bytes:
    """AAC in an MP4 container branded M4A, as iTunes and phones write it."""
    return _audio(
        "ipod", ("aac",), seconds=seconds, sample_rate=sample_rate, channels=channels, seed=seed
    )


def audio_mp3(
    seconds: float = 1.0, *, sample_rate: int = 44_100, channels: int = 1, seed: int = 0
) -> bytes:
    """An MP3 (LAME) with an ID3v2 header."""
    return _audio(
        "mp3",
        ("libmp3lame", "mp3"),
        seconds=seconds,
        sample_rate=sample_rate,
        channels=channels,
        seed=seed,
    )


def audio_ogg(
    seconds: float = 1.0, *, sample_rate: int = 48_000, channels: int = 1, seed: int = 0
) -> bytes:
    """Opus in Ogg (Opus only runs at 48 kHz and its divisors)."""
    return _audio(
        "ogg",
        ("libopus", "opus"),
        seconds=seconds,
        sample_rate=sample_rate,
        channels=channels,
        seed=seed,
    )

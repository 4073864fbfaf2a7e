"""Pictures to analyse out of a stored file: an image's first frame upright, or a video's frames
at fractions of its length, each no larger than asked.

The file was proven whole when it was downloaded; it is still treated as hostile. Its type is
sniffed from its bytes, an image is opened only as that Pillow format (the allowlist of
mediad.media.images) under the pixel bound, a video only through the FFmpeg demuxer that type
names, reading local files alone, and whatever a decoder raises becomes a MediaError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from mediad import errors
from mediad.media import clean, containers, images, info, sniff

# Packets read after a seek before the wanted frame must have come (a key frame every few
# seconds is the norm; a 10-minute GOP is not): past it, the last frame decoded is taken.
_MAX_PACKETS_AFTER_SEEK = 3000
# Packets a video without a duration may be read through to find its end.
_MAX_PACKETS_SCANNED = 1_000_000
_ORIENTATION = 0x0112


@dataclass
class Picture:
    """One picture to analyse: RGB, upright, downscaled; `size` is its upright size before."""

    image: Image.Image
    size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Analysed pixels per original pixel (1.0 when it was not downscaled)."""
        return self.image.width / self.size[0] if self.size[0] else 1.0


@dataclass
class Frame:
    """A video frame: where it was asked for (a fraction), where it was found (seconds)."""

    position: float
    time: float
    picture: Picture


def sniffed_type(path: str | Path) -> str:
    """The file's MIME type from its first bytes (NotMediaError for anything else)."""
    with open(path, "rb") as file:
        head = file.read(sniff.HEAD_BYTES)
    return sniff.media_type(head)


def open_picture(
    path: str | Path, mime_type: str, *, longest: int, max_pixels: int = info.MAX_IMAGE_PIXELS
) -> Picture:
    """An image's first frame, upright (EXIF orientation applied), RGB (transparency over
    white), at most `longest` pixels on its long side; a JPEG is decoded shrunk (draft)."""
    pillow_format = images.FORMATS.get(mime_type)
    if pillow_format is None:
        raise errors.UnsupportedMediaError(f"{mime_type} is not a picture mediad decodes")
    described = f"{pillow_format} image"
    try:
        with Image.open(path, formats=[pillow_format]) as img:
            info.check_pixels(img.size, max_pixels, described)
            width, height = img.size
            if img.getexif().get(_ORIENTATION) in info.QUARTER_TURNS:
                width, height = height, width  # a quarter turn: shown with the sides swapped
            img.seek(0)
            if img.format in {"JPEG", "MPO"}:
                # draft() keeps at least the box asked for; the box is square, so an
                # orientation that swaps the sides changes nothing.
                img.draft("RGB", (longest, longest))
            picture: Image.Image = img
            if picture.mode not in {"RGB", "RGBA", "L", "LA"}:
                # Pillow resizes palette and bilevel pictures by nearest neighbour.
                picture = _rgb(picture)
            # Shrunk before anything else copies it: the full-size decode is the only one.
            picture.thumbnail((longest, longest), Image.Resampling.LANCZOS)
            rgb = _rgb(ImageOps.exif_transpose(picture))
    except errors.MediadError:
        raise
    except Image.DecompressionBombError as exc:
        raise errors.MediaTooLargeError(f"{described} is too large to decode: {exc}") from None
    except MemoryError:
        raise errors.MediaTooLargeError(f"{described} does not fit in memory") from None
    except Exception as exc:  # Pillow raises anything on hostile bytes
        raise errors.CorruptMediaError(
            f"{described} does not decode: {clean.reason(exc, Path(path))}"
        ) from None
    return Picture(rgb, (width, height))


def video_frames(
    path: str | Path,
    mime_type: str,
    positions: tuple[float, ...],
    *,
    longest: int,
    max_pixels: int = info.MAX_IMAGE_PIXELS,
) -> tuple[float, list[Frame]]:
    """The video's length (seconds) and its first frame at or after each position (a fraction
    of its length), upright (display rotation applied), at most `longest` on the long side."""
    # PyAV (FFmpeg's libraries, 130 MB of address space) loads only for videos.
    import av

    family = containers.FAMILIES.get(mime_type)
    if family is None or family.video is None:
        raise errors.UnsupportedMediaError(f"{mime_type} is not a video mediad decodes")
    described = f"{mime_type} file"
    try:
        with av.open(
            str(path),
            "r",
            format=family.demuxer,
            options=containers.OPTIONS,
            metadata_errors="replace",
        ) as container:
            stream = next(
                (
                    s
                    for s in container.streams.video
                    if not s.disposition & av.stream.Disposition.attached_pic
                ),
                None,
            )
            if stream is None:
                raise errors.UnsupportedMediaError(f"{described} has no video stream")
            size = (stream.codec_context.width, stream.codec_context.height)
            info.check_pixels(size, max_pixels, described)
            # One decoding thread: the parallelism is the pool's, one task per core.
            stream.codec_context.thread_count = 1
            duration = _duration(container, stream)
            frames = []
            for position in positions:
                found = _frame_at(container, stream, duration * position)
                if found is not None:
                    seconds, picture = found
                    frames.append(Frame(position, seconds, _upright_frame(picture, longest)))
    except errors.MediadError:
        raise
    except MemoryError:
        raise errors.MediaTooLargeError(f"{described}'s frames do not fit in memory") from None
    except Exception as exc:  # FFmpeg raises anything on hostile bytes
        raise errors.CorruptMediaError(
            f"{described} does not decode: {clean.reason(exc, Path(path))}"
        ) from None
    if not frames:
        raise errors.CorruptMediaError(f"{described}: no video frame decodes")
    return duration, frames


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode in {"RGBA", "LA", "PA"} or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # 16-bit greyscale (PNG, TIFF): Pillow's convert clips it to 255; scale it down instead.
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")


def _shrink(img: Image.Image, longest: int) -> Image.Image:
    if max(img.size) > longest:
        img.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return img


def _upright_frame(frame: object, longest: int) -> Picture:
    import av

    assert isinstance(frame, av.VideoFrame)
    img = frame.to_image()  # type: ignore[no-untyped-call]
    rotation = int(frame.rotation) % 360
    if rotation:
        # The display matrix turns the picture counter-clockwise by `rotation`, as PIL does.
        img = img.rotate(rotation, expand=True)
    return Picture(_shrink(img.convert("RGB"), longest), img.size)


def _duration(container: object, stream: object) -> float:
    """Seconds, from the header, else the stream, else the last packet's end."""
    import av

    assert isinstance(container, av.container.InputContainer)
    assert isinstance(stream, av.VideoStream)
    if container.duration and container.duration > 0:
        return float(container.duration / av.time_base)
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    # No header says (live WebM, some MPEG-TS): demux without decoding to the last packet.
    end = 0.0
    for count, packet in enumerate(container.demux(stream)):
        if packet.pts is not None and packet.time_base is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        if count >= _MAX_PACKETS_SCANNED:
            break
    container.seek(0)
    return end


def _frame_at(container: object, stream: object, target: float) -> tuple[float, object] | None:
    """The first frame at or after `target` seconds (the last one when the video ends before)."""
    import av

    assert isinstance(container, av.container.InputContainer)
    assert isinstance(stream, av.VideoStream)
    if stream.time_base is not None and target > 0:
        # backward: lands on the key frame at or before the target, decoded forward from there.
        container.seek(math.floor(target / stream.time_base), stream=stream, backward=True)
    else:
        container.seek(0)
    last: tuple[float, object] | None = None
    # Half a frame's slack: a frame stamped a rounding error before the target is the target.
    rate = stream.average_rate or stream.guessed_rate
    slack = 0.5 / float(rate) if rate else 0.001
    for count, packet in enumerate(container.demux(stream)):
        for frame in packet.decode():
            if not isinstance(frame, av.VideoFrame):
                continue
            seconds = float(frame.time) if frame.time is not None else 0.0
            last = (seconds, frame)
            if seconds >= target - slack:
                return last
        if count >= _MAX_PACKETS_AFTER_SEEK:
            break
    return last

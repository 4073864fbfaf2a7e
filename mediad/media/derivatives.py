"""Derivatives of a stored picture, made in a decoder worker: WebP thumbnails and previews, the
optimized progressive JPEG, and the public copy (public.py).

One decode serves every size, made largest first, each smaller one from the one before:

- a JPEG (and a BMP) through Pillow; a JPEG is shrunk on load (`draft`: libjpeg's DCT scaling)
  to the smallest scale that still covers the largest size asked, so a 12 MP photo for a
  1280 px preview costs a quarter of its pixels. On 12 MP photos Pillow's draft and thumbnail
  took 10-15% less CPU than libvips' thumbnail for the same two WebPs (benchmarks/derive.py);
- PNG, GIF, WebP and TIFF through libvips' `thumbnail`, which streams: a 13000x13000 PNG is
  read row by row and shrunk as it goes (about 100 MB, where Pillow holds all its 676 MB), and
  a WebP is shrunk on load. libvips may open only the one format the row's type names;
- a video's poster frame (about 10% in) through PyAV, then as a Pillow picture.

Every output is upright (EXIF orientation, a video's display matrix), in sRGB when the source
carries an ICC profile (a profile that cannot be read is ignored, and the result says so), and
never larger than its source. The parent created every output file (in the store's temp
folder); the task writes into them and returns what it made as JSON.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageCms, ImageOps

from mediad import errors
from mediad.media import images, info, public
from mediad.media.derive_plan import NOTHING_TO_STRIP, draft_box

# Which library decodes each type (see the module docstring).
PILLOW_TYPES = frozenset({"image/jpeg", "image/bmp"})
VIPS_LOADERS: Mapping[str, str] = {
    "image/png": "VipsForeignLoadPng",
    "image/apng": "VipsForeignLoadPng",
    "image/gif": "VipsForeignLoadNsgif",
    "image/webp": "VipsForeignLoadWebp",
    "image/tiff": "VipsForeignLoadTiff",
}
PUBLIC_TYPES = frozenset({"image/jpeg", "image/png", "image/apng", "image/webp"})
WEBP_QUALITY = 80
WEBP_METHOD = 4  # libwebp's default effort, as Pillow and libvips both use it
# Where the poster frame of a video is taken, as a fraction of its length.
POSTER_AT = 0.1


# --- admission (its price: derive_plan.decode_cost) ---------------------------------------------


def header_task(payload: dict[str, Any]) -> dict[str, Any]:
    """What the cost of deriving the picture at `path` depends on; no pixel decoded."""
    pillow_format = images.FORMATS.get(payload["mime_type"])
    if pillow_format is None:
        raise errors.UnsupportedMediaError(f"{payload['mime_type']} is not a picture")
    with images.open_allowed(payload["path"], (pillow_format,)) as img:
        width, height = img.size
        return {
            "width": width,
            "height": height,
            "bands": len(img.getbands()),
            "progressive": bool(img.info.get("progressive") or img.info.get("progression")),
            "interlaced": bool(img.info.get("interlace")),
        }


# --- the task ---------------------------------------------------------------------------------


def derive_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Make the outputs of `payload` from the file at its `path`.

    payload: {"path", "mime_type", "outputs": [{"kind", "format": "webp" | "jpeg", "px",
    "path", "quality"?, "keep_if_smaller_than"?}], "public": {"path"} | None}. Returns
    {"source": {...}, "outputs": {kind: {"width", "height", "mime_type"} | {"not_kept": why}},
    "public": {"stripped": [...]} | {"original": true}} (the parent hashes the files).
    """
    path, mime_type = payload["path"], payload["mime_type"]
    result: dict[str, Any] = {"outputs": {}}
    outputs = sorted(payload["outputs"], key=lambda o: -int(o["px"]))
    try:
        if outputs:
            picture, source = _open(path, mime_type, int(outputs[0]["px"]))
            result["source"] = source
            for output in outputs:
                picture = picture.shrunk(int(output["px"]))
                result["outputs"][output["kind"]] = _save(picture, output)
            del picture
        wanted = payload.get("public")
        if wanted:
            result["public"] = _public(Path(path), mime_type, Path(wanted["path"]))
    finally:
        _give_back_memory()
    return result


@functools.cache
def _malloc_trim() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


def _give_back_memory() -> None:
    """Return the heap a decode freed to the system: glibc keeps it otherwise, and a worker
    that once shrank a 13000x13000 PNG would hold some 30 MB more for the rest of its life."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _public(path: Path, mime_type: str, target: Path) -> dict[str, Any]:
    if mime_type in NOTHING_TO_STRIP:
        return {"original": True}
    stripped = public.public_copy(path, mime_type, target)
    return {"stripped": stripped.removed} if stripped else {"original": True}


def _save(picture: _Picture, output: Mapping[str, Any]) -> dict[str, Any]:
    target = output["path"]
    if output["format"] == "webp":
        picture.save_webp(target)
        mime_type = "image/webp"
    else:
        if picture.has_alpha:
            return {"not_kept": "the picture is transparent, which a JPEG cannot hold"}
        if getattr(picture, "animated", False):
            return {"not_kept": "the picture is animated; its JPEG would be a still"}
        picture.save_jpeg(target, int(output.get("quality", 85)))
        mime_type = "image/jpeg"
        limit = output.get("keep_if_smaller_than")
        size = Path(target).stat().st_size
        if limit is not None and size >= int(limit):
            return {"not_kept": f"{size} bytes, not smaller than the original's {limit}"}
    width, height = picture.size
    return {"width": width, "height": height, "mime_type": mime_type}


def _open(path: str, mime_type: str, longest: int) -> tuple[_Picture, dict[str, Any]]:
    if mime_type.startswith("video/"):
        return _poster(path)
    if mime_type in VIPS_LOADERS:
        return _vips_open(path, mime_type, longest)
    if mime_type in PILLOW_TYPES:
        return _pillow_open(path, mime_type, longest)
    raise errors.UnsupportedMediaError(f"no derivatives are made of {mime_type}")


class _Picture(Protocol):
    @property
    def size(self) -> tuple[int, int]: ...

    @property
    def has_alpha(self) -> bool: ...

    def shrunk(self, longest: int) -> _Picture: ...

    def save_webp(self, path: str) -> None: ...

    def save_jpeg(self, path: str, quality: int) -> None: ...


# --- Pillow -----------------------------------------------------------------------------------


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class _PillowPicture:
    def __init__(self, image: Image.Image) -> None:
        # Nothing of the source's metadata (EXIF, ICC) may follow it into a derivative.
        image.info = {}
        self.image = image

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def has_alpha(self) -> bool:
        return self.image.mode in ("RGBA", "LA", "PA")

    def shrunk(self, longest: int) -> _PillowPicture:
        # In place: each output is made from the one before (largest first).
        self.image.thumbnail((longest, longest))
        return self

    def save_webp(self, path: str) -> None:
        self.image.save(path, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)

    def save_jpeg(self, path: str, quality: int) -> None:
        self.image.save(path, "JPEG", quality=quality, progressive=True, optimize=True)


def _pillow_open(path: str, mime_type: str, longest: int) -> tuple[_Picture, dict[str, Any]]:
    pillow_format = images.FORMATS[mime_type]
    described = f"the stored {pillow_format} image"
    try:
        with Image.open(path, formats=[pillow_format]) as img:
            info.check_pixels(img.size, info.MAX_IMAGE_PIXELS, described)
            width, height = img.size
            if pillow_format == "JPEG":
                img.draft(None, draft_box(width, height, longest))
            img.load()
            decoded = img.size
            icc = img.info.get("icc_profile")
            orientation = _upright(img)
            upright: Image.Image = img
    except errors.MediadError:
        raise
    except Image.DecompressionBombError as exc:
        raise errors.MediaTooLargeError(f"{described} is too large: {exc}") from None
    except Exception as exc:  # Pillow raises anything on hostile bytes
        raise errors.CorruptMediaError(f"{described} does not decode: {exc}") from None
    picture, colour = _pillow_srgb(upright, icc)
    source = {
        "engine": "pillow",
        "decoded": list(decoded),
        "orientation": orientation,
        "colour": colour,
    }
    return _PillowPicture(picture), source


def _upright(img: Image.Image) -> int:
    """Turn the loaded picture, in place, as its EXIF orientation says; the orientation
    followed (1-8; anything else, or EXIF Pillow cannot read, leaves it as stored: 1)."""
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1
    if not 1 <= orientation <= 8:
        return 1
    if orientation != 1:
        ImageOps.exif_transpose(img, in_place=True)
    return orientation


def _pillow_srgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, str]:
    """The picture in sRGB (RGB, RGBA or L), and how: "converted", "as stored", or why its
    profile was ignored."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB"
            if image.mode not in ("RGB", "RGBA", "CMYK", "L"):
                image = image.convert(mode)
            converted = ImageCms.profileToProfile(image, source, _srgb(), outputMode=mode)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            note = f"profile ignored: {exc}"[:200]
        else:
            assert converted is not None
            return converted, "converted"
    else:
        note = "as stored"
    if image.mode not in ("RGB", "RGBA", "L"):
        has_alpha = image.mode in ("LA", "PA") or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    return image, note


# --- PyAV -------------------------------------------------------------------------------------


def _poster(path: str) -> tuple[_Picture, dict[str, Any]]:
    """The frame about POSTER_AT into the video (else its first that decodes), upright."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise errors.PermanentError(
                    "the video has no video stream", error_code="no_poster_frame"
                )
            stream = container.streams.video[0]
            seconds = _duration(container, stream)
            found = None
            for fraction in (POSTER_AT, 0.0):
                found = _frame_at(container, stream, seconds * fraction)
                if found is not None:
                    break
    except errors.MediadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # FFmpeg raises anything on hostile bytes
        raise errors.PermanentError(
            f"no poster frame of the video decodes: {exc}", error_code="no_poster_frame"
        ) from None
    if found is None:
        raise errors.PermanentError(
            "no frame of the video decodes, at 10% or from its start", error_code="no_poster_frame"
        )
    image, at, rotation = found
    if rotation:
        # The display matrix's angle is counterclockwise, as is Pillow's rotate.
        image = image.rotate(rotation, expand=True)
    info.check_pixels(image.size, info.MAX_IMAGE_PIXELS, "the video's frame")
    picture, _ = _pillow_srgb(image, None)
    source = {
        "engine": "pyav",
        "width": image.width,
        "height": image.height,
        "poster_seconds": round(at, 3),
        "rotation": rotation,
        "colour": "as stored",
    }
    return _PillowPicture(picture), source


def _duration(container: Any, stream: Any) -> float:
    if container.duration:
        return float(container.duration) / 1_000_000
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return 0.0


def _frame_at(container: Any, stream: Any, target: float) -> tuple[Image.Image, float, int] | None:
    """The first frame at or after `target` seconds that decodes (a seek lands on the key
    frame before it), with its time and rotation; None if none does."""
    try:
        if target > 0 and stream.time_base:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        else:
            container.seek(0, stream=stream, backward=True)
        last = None
        for frame in container.decode(stream):
            last = frame
            if frame.time is None or frame.time >= target:
                break
        if last is None:
            return None
        return last.to_image(), float(last.time or 0.0), int(last.rotation or 0) % 360
    except MemoryError:
        raise
    except Exception:
        return None


# --- libvips ----------------------------------------------------------------------------------


@functools.cache
def _vips() -> Any:
    """pyvips, imported in the worker (never in the forkserver, which forks the workers: libvips
    starts threads), with no cache, one thread (the pool runs one decode per worker) and every
    loader blocked until a task allows the one its type names."""
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    pyvips.concurrency_set(1)
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    return pyvips


class _VipsPicture:
    def __init__(self, image: Any, *, animated: bool = False) -> None:
        self.image = image
        self.animated = animated

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.width), int(self.image.height)

    @property
    def has_alpha(self) -> bool:
        return bool(self.image.hasalpha())

    def shrunk(self, longest: int) -> _VipsPicture:
        if max(self.size) <= longest:
            return self
        smaller = _vips_call(lambda: self.image.thumbnail_image(longest, size="down").copy_memory())
        return _VipsPicture(smaller, animated=self.animated)

    def save_webp(self, path: str) -> None:
        _vips_call(
            lambda: self.image.webpsave(path, Q=WEBP_QUALITY, effort=WEBP_METHOD, keep="none")
        )

    def save_jpeg(self, path: str, quality: int) -> None:
        image = self.image
        if image.bands == 2:  # grey and alpha: the alpha was refused before
            image = image[0]
        _vips_call(
            lambda: image.jpegsave(
                path, Q=quality, interlace=True, optimize_coding=True, keep="none"
            )
        )


def _vips_call(call: Any) -> Any:
    pyvips = _vips()
    try:
        return call()
    except pyvips.Error as exc:
        detail = " ".join(f"{exc.message} {exc.detail}".split())[:500]
        if "out of memory" in detail:
            raise errors.MediaTooLargeError(f"libvips ran out of memory: {detail}") from None
        raise errors.CorruptMediaError(f"the stored picture does not decode: {detail}") from None


def _vips_open(path: str, mime_type: str, longest: int) -> tuple[_Picture, dict[str, Any]]:
    pyvips = _vips()
    # One loader at a time: libvips can open only the format the row's type names.
    pyvips.operation_block_set("VipsForeignLoad", True)
    pyvips.operation_block_set(VIPS_LOADERS[mime_type], False)
    try:
        with Image.open(path, formats=[images.FORMATS[mime_type]]) as img:
            info.check_pixels(img.size, info.MAX_IMAGE_PIXELS, f"the stored {mime_type}")
            icc = img.info.get("icc_profile")
    except errors.MediadError:
        raise
    except Exception as exc:  # Pillow raises anything on hostile bytes
        raise errors.CorruptMediaError(f"the stored {mime_type} does not open: {exc}") from None
    colour = "as stored"
    if icc:
        try:
            ImageCms.ImageCmsProfile(io.BytesIO(icc))
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            colour = f"profile ignored: {exc}"[:200]  # libvips ignores it too
        else:
            colour = "converted"

    def decode() -> Any:
        # fail_on: a picture that decodes only partly is refused, never padded out.
        image = pyvips.Image.thumbnail(
            path, longest, size="down", export_profile="srgb", fail_on="error"
        )
        return image.copy_memory()

    image = _vips_call(decode)
    pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
    if image.hasalpha() and _vips_call(lambda: image.extract_band(image.bands - 1).min()) >= (
        65535 if image.format == "ushort" else 255
    ):
        image = image.extract_band(0, n=image.bands - 1).copy_memory()  # an alpha hiding nothing
    source = {
        "engine": "libvips",
        "decoded": [int(image.width), int(image.height)],
        "colour": colour,
        "frames": int(pages),
    }
    return _VipsPicture(image, animated=pages > 1), source

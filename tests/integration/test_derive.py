"""The derive stage against a real PostgreSQL and real files made by Pillow and PyAV: thumbnails
and previews upright, the optimized JPEG, the public copy, a video's poster, bad input, and the
same bytes derived once."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import asyncpg
from PIL import ExifTags, Image, ImageChops, ImageCms, ImageOps, ImageStat

from mediad.commands import derive as derive_commands
from mediad.commands import verify
from mediad.media.decoders import DecoderPool
from mediad.stages import derive
from mediad.storage.local import Store
from tests import media
from tests.archive_support import events
from tests.derive_support import (
    close_to,
    derive_config,
    derived_files,
    derived_rows,
    flip_a_byte,
    opened,
    read,
    run_derive,
)
from tests.support import row


def quadrants(width: int = 80, height: int = 60) -> Image.Image:
    """Four colours, one per quadrant: any turn or flip moves them."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    img.paste((220, 20, 20), (0, 0, width // 2, height // 2))
    img.paste((20, 200, 20), (width // 2, 0, width, height // 2))
    img.paste((20, 20, 220), (0, height // 2, width // 2, height))
    return img


def oriented_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    out = io.BytesIO()
    quadrants().save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel of two pictures of one size (0-255)."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


async def test_thumbnails_of_every_orientation_come_out_upright(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """A JPEG of each EXIF orientation 1-8 gets a thumbnail and a preview turned as
    ImageOps.exif_transpose turns the original, and a completed row with its event."""
    cfg = derive_config(tmp_path / "media", derive_thumbnail_px="40", derive_preview_px="60")
    files = [(oriented_jpeg(o), "image/jpeg") for o in range(1, 9)]
    ids = await derived_rows(pool, Store.from_config(cfg.storage), files)
    await run_derive(cfg, db_url)
    for media_id, (data, _) in zip(ids, files, strict=True):
        r = await row(pool, media_id)
        assert r["derive_status"] == "completed"
        assert r["download_status"] == "completed"
        with Image.open(io.BytesIO(data)) as original:
            upright = ImageOps.exif_transpose(original)
        for kind, longest in (("thumbnail", 40), ("preview", 60)):
            entry = r["derivatives"][kind]
            picture = opened(entry)
            assert picture.format == "WEBP" and entry["mime_type"] == "image/webp"
            assert max(picture.size) == longest
            assert (picture.width > picture.height) == (upright.width > upright.height)
            assert (entry["width"], entry["height"]) == picture.size
            assert difference(picture, upright.resize(picture.size)) < 12
        assert r["thumbnail_url"] == r["derivatives"]["thumbnail"]["url"]
        assert r["thumbnail_url"].startswith("https://media.example.org/derived/thumbnail/")
        [done] = events(r, "derivatives_created")
        assert done["status"] == "success"
        assert {"thumbnail", "preview"} <= set(done["details"]["kinds"])
        assert done["details"]["seconds"] >= 0
        assert [e["event"] for e in r["ai_analysis_log"]][-2:] == [
            "derive_started",
            "derivatives_created",
        ]


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
    b' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    b' exif:GPSLatitude="48,51.5N" exif:GPSLongitude="2,17.7E" exif:ExposureTime="1/60">'
    b"<exif:GPSAltitude>35</exif:GPSAltitude></rdf:Description></rdf:RDF></x:xmpmeta>"
)


def phone_photo(width: int = 96, height: int = 72, *, seed: int = 0) -> bytes:
    """A JPEG with what a phone writes: GPS, serial numbers, a maker note, GPS in XMP."""
    exif = media.camera_exif(altitude=35.0)
    exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    exif_ifd[ExifTags.Base.BodySerialNumber] = "BODY-0123456789"
    exif_ifd[ExifTags.Base.LensSerialNumber] = "LENS-9876543210"
    exif_ifd[ExifTags.Base.MakerNote] = b"Apple iOS\x00" + bytes(range(64))
    out = io.BytesIO()
    media.noise_image(width, height, seed=seed).save(out, "JPEG", quality=90, exif=exif, xmp=XMP)
    return out.getvalue()


async def test_the_public_copy_of_a_jpeg_loses_gps_and_serials_and_keeps_its_pixels(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """The public copy has no GPS (EXIF or XMP), serial numbers or maker note, keeps the rest of
    its EXIF, and decodes to exactly the original's pixels; the original is untouched."""
    cfg = derive_config(tmp_path / "media")
    data = phone_photo()
    [media_id] = await derived_rows(pool, Store.from_config(cfg.storage), [(data, "image/jpeg")])
    with Image.open(io.BytesIO(data)) as original:
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the test has teeth
        pixels = original.tobytes()
    await run_derive(cfg, db_url)
    r = await row(pool, media_id)
    assert read(r["local_file_path"]) == data
    entry = r["derivatives"]["public"]
    assert entry["sha256"] != r["sha256_sum"] and "original" not in entry
    assert entry["path"].endswith(f"/derived/public/{r['sha256_sum'][:2]}/{r['sha256_sum']}.jpg")
    copy = read(entry["path"])
    assert len(copy) == entry["file_size"] == len(data)
    with Image.open(io.BytesIO(copy)) as public:
        assert public.tobytes() == pixels
        exif = public.getexif()
        assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
        assert ExifTags.IFD.GPSInfo not in exif
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
        for tag in (ExifTags.Base.BodySerialNumber, ExifTags.Base.LensSerialNumber,
                    ExifTags.Base.MakerNote):  # fmt: skip
            assert tag not in exif_ifd
        assert exif[ExifTags.Base.Make] == "Canon" and exif[ExifTags.Base.Model] == "EOS R5"
        assert exif_ifd[ExifTags.Base.DateTimeOriginal] == "2024:05:06 07:08:09"
        xmp = public.info.get("xmp", b"")
    assert b"GPS" not in xmp and b'exif:ExposureTime="1/60"' in xmp
    for secret in (b"BODY-0123456789", b"LENS-9876543210", b"Apple iOS", b"48,51.5N"):
        assert secret in data and secret not in copy
    [done] = events(r, "derivatives_created")
    assert set(done["details"]["public_stripped"]) >= {"gps", "maker_note", "xmp_gps"}


async def test_png_and_webp_lose_their_exif_chunk_and_a_clean_file_is_its_own_copy(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """A PNG's eXIf and a WebP's EXIF chunk are dropped, nothing else changed; a file with
    nothing to strip is recorded as its own public copy, with no file made."""
    cfg = derive_config(tmp_path / "media")
    exif = media.camera_exif()
    picture = media.noise_image(40, 30, seed=5)
    png_out, webp_out = io.BytesIO(), io.BytesIO()
    picture.save(png_out, "PNG", exif=exif)
    picture.save(webp_out, "WEBP", exif=exif, lossless=True)
    clean = media.jpeg(seed=6)
    files = [(png_out.getvalue(), "image/png"), (webp_out.getvalue(), "image/webp"),
             (clean, "image/jpeg")]  # fmt: skip
    ids = await derived_rows(pool, Store.from_config(cfg.storage), files)
    await run_derive(cfg, db_url)
    for media_id, (data, mime) in zip(ids[:2], files[:2], strict=True):
        r = await row(pool, media_id)
        entry = r["derivatives"]["public"]
        assert entry["mime_type"] == mime
        copy = read(entry["path"])
        with Image.open(io.BytesIO(copy)) as public, Image.open(io.BytesIO(data)) as original:
            assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)
            assert dict(public.getexif()) == {}
            assert public.tobytes() == original.tobytes()
        assert b"Canon" in data and b"Canon" not in copy
    r = await row(pool, ids[2])
    entry = r["derivatives"]["public"]
    assert entry["original"] is True
    assert (entry["path"], entry["url"], entry["sha256"]) == (
        r["local_file_path"], r["hosted_url"], r["sha256_sum"],
    )  # fmt: skip
    assert derived_files(tmp_path / "media", "public", r["sha256_sum"]) == []


def smooth_photo(width: int, height: int, *, quality: int, seed: int = 0) -> bytes:
    """A camera-like JPEG: smooth colour fields, as a photo rather than noise."""
    small = media.noise_image(max(2, width // 40), max(2, height // 40), seed=seed)
    out = io.BytesIO()
    small.resize((width, height), Image.Resampling.BICUBIC).save(out, "JPEG", quality=quality)
    return out.getvalue()


async def test_the_optimized_copy_is_progressive_at_most_1920_px_and_smaller(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """A large photo's optimized copy is a progressive JPEG of 1920 px that is smaller than the
    original; one that would not be smaller is not kept, and the row says so."""
    cfg = derive_config(tmp_path / "media")
    large = smooth_photo(2600, 1950, quality=98)
    tiny = media.jpeg(48, 36, quality=20, seed=9)
    ids = await derived_rows(
        pool, Store.from_config(cfg.storage), [(large, "image/jpeg"), (tiny, "image/jpeg")]
    )
    await run_derive(cfg, db_url)
    r = await row(pool, ids[0])
    entry = r["derivatives"]["optimized"]
    with Image.open(entry["path"]) as img:
        assert img.format == "JPEG"
        assert img.info.get("progressive") or img.info.get("progression")
        assert img.size == (1920, 1440) == (entry["width"], entry["height"])
    assert entry["file_size"] < len(large)
    assert entry["mime_type"] == "image/jpeg"
    assert entry["path"].endswith(".jpg")
    r = await row(pool, ids[1])
    assert r["derive_status"] == "completed"
    assert "optimized" not in r["derivatives"]
    [done] = events(r, "derivatives_created")
    assert "not smaller than the original" in done["details"]["not_kept"]["optimized"]
    assert "optimized" in r["metadata"]["derive"]["not_kept"]
    assert derived_files(tmp_path / "media", "optimized", r["sha256_sum"]) == []


async def test_a_video_gets_a_poster_thumbnail(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """A video's thumbnail and preview come from its frame about 10% in, turned upright by its
    display matrix; no optimized or public copy is made of it."""
    cfg = derive_config(tmp_path / "media")
    video = media.mp4(seconds=2.0, width=64, height=48, fps=10, rotation=90)
    [media_id] = await derived_rows(pool, Store.from_config(cfg.storage), [(video, "video/mp4")])
    await run_derive(cfg, db_url)
    r = await row(pool, media_id)
    assert r["derive_status"] == "completed"
    assert set(r["derivatives"]) == {"thumbnail", "preview"}
    thumbnail = opened(r["derivatives"]["thumbnail"])
    assert thumbnail.format == "WEBP" and thumbnail.size == (48, 64)
    assert r["thumbnail_url"].partition("?")[0].endswith(".webp")
    source = r["metadata"]["derive"]["source"]
    assert source["engine"] == "pyav" and 0.1 <= source["poster_seconds"] <= 0.4


async def test_audio_and_documents_are_skipped(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """Audio and documents get derive_skipped with a reason, and nothing on disk."""
    cfg = derive_config(tmp_path / "media")
    files = [(media.audio_mp3(), "audio/mpeg"), (media.pdf(), "application/pdf")]
    ids = await derived_rows(pool, Store.from_config(cfg.storage), files)
    await run_derive(cfg, db_url)
    for media_id, (_, mime) in zip(ids, files, strict=True):
        r = await row(pool, media_id)
        assert r["derive_status"] == "skipped"
        [skipped] = events(r, "derive_skipped")
        assert skipped["details"]["reason"] == f"{mime} has no derivatives"
        assert r["derivatives"] is None
    assert derived_files(tmp_path / "media", "thumbnail") == []


async def test_the_same_bytes_are_derived_once(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """Rows holding the same bytes share one set of derivatives, made once."""
    cfg = derive_config(tmp_path / "media")
    data = media.jpeg_with_exif(seed=12)
    ids = await derived_rows(pool, Store.from_config(cfg.storage), [(data, "image/jpeg")] * 3)
    await run_derive(cfg, db_url)
    rows = [await row(pool, media_id) for media_id in ids]
    assert {r["derive_status"] for r in rows} == {"completed"}
    assert len({r["derivatives"]["thumbnail"]["sha256"] for r in rows}) == 1
    details = [events(r, "derivatives_created")[0]["details"] for r in rows]
    made = [d for d in details if not d.get("shared") and "reused_from" not in d]
    assert len(made) == 1


def display_p3() -> bytes:
    """libvips' own Display P3 profile: a wide-gamut ICC profile to tag a picture with."""
    import pyvips

    pixel = pyvips.Image.black(1, 1, bands=3).cast("uchar").copy(interpretation="srgb")
    profile: bytes = pixel.icc_transform("p3", input_profile="srgb").get("icc-profile-data")
    return profile


def p3_png(colour: tuple[int, int, int]) -> bytes:
    """A PNG in Display P3 showing the sRGB `colour`: its numbers are P3's, its profile says so."""
    profile = display_p3()
    to_p3 = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(profile)), "RGB", "RGB"
    )
    picture = ImageCms.applyTransform(Image.new("RGB", (40, 30), colour), to_p3)
    assert picture is not None and picture.getpixel((0, 0)) != colour
    out = io.BytesIO()
    picture.save(out, "PNG", icc_profile=profile)
    return out.getvalue()


def corrupt_video() -> bytes:
    """An MP4 whose container is whole and whose every coded frame is zeros."""
    data = bytearray(media.mp4(seconds=2.0, width=64, height=48))
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 20 : at - 4 + size] = bytes(size - 24)
    return bytes(data)


def encoded(picture: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


async def test_bad_input_gets_correct_derivatives_or_a_clear_error_code(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """Partly decodable pictures and a video whose frames do not decode fail with an error code;
    CMYK, 16-bit, a broken or a wide-gamut ICC profile, one pixel and orientation 9 get correct
    derivatives; every download stays completed, and the run ends normally."""
    cfg = derive_config(tmp_path / "media")
    whole = media.jpeg_with_exif(160, 120)
    png = encoded(media.noise_image(300, 300), "PNG")
    cases: dict[str, tuple[bytes, str]] = {
        "truncated_jpeg": (whole[: len(whole) * 2 // 3], "image/jpeg"),
        "truncated_png": (png[: len(png) * 6 // 10], "image/png"),
        "cmyk": (encoded(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"), "image/jpeg"),
        "grey16": (encoded(Image.new("I;16", (40, 30), 40000), "PNG"), "image/png"),
        "broken_icc": (
            encoded(Image.new("RGB", (40, 30), (20, 200, 30)), "JPEG", icc_profile=b"no" * 80),
            "image/jpeg",
        ),
        "p3": (p3_png((200, 30, 40)), "image/png"),
        "one_pixel": (encoded(Image.new("P", (1, 1), 7), "GIF"), "image/gif"),
        "video": (corrupt_video(), "video/mp4"),
        "orientation_9": (media.jpeg_with_exif(80, 60, orientation=9), "image/jpeg"),
    }
    ids = dict(zip(cases, await derived_rows(
        pool, Store.from_config(cfg.storage), list(cases.values())
    ), strict=True))  # fmt: skip
    await run_derive(cfg, db_url)
    rows = {name: await row(pool, media_id) for name, media_id in ids.items()}
    assert {r["download_status"] for r in rows.values()} == {"completed"}
    for name, code in (("truncated_jpeg", "corrupt_media"), ("truncated_png", "corrupt_media"),
                       ("video", "no_poster_frame")):  # fmt: skip
        r = rows[name]
        assert r["derive_status"] == "failed", name
        assert r["error_code"] == code, name
        [failed] = events(r, "derive_failed")
        assert failed["details"]["error_code"] == code and failed["details"]["error"]
        assert r["derivatives"] is None
    for name in ("cmyk", "grey16", "broken_icc", "p3", "one_pixel", "orientation_9"):
        assert rows[name]["derive_status"] == "completed", name

    def thumb(name: str) -> Image.Image:
        return opened(rows[name]["derivatives"]["thumbnail"]).convert("RGB")

    assert close_to(thumb("cmyk").getpixel((20, 15)), (237, 28, 36), 40)
    assert thumb("grey16").getpixel((20, 15)) == (155, 155, 155)
    assert close_to(thumb("broken_icc").getpixel((20, 15)), (20, 200, 30), 8)
    assert "profile ignored" in rows["broken_icc"]["metadata"]["derive"]["source"]["colour"]
    assert close_to(thumb("p3").getpixel((20, 15)), (200, 30, 40), 6)
    assert rows["p3"]["metadata"]["derive"]["source"]["colour"] == "converted"
    assert thumb("one_pixel").size == (1, 1)
    assert thumb("orientation_9").size == (80, 60)


async def test_a_size_change_and_mediad_derive_replace_the_old_files(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """After a change of sizes, `mediad derive --all` re-queues the rows; the thumbnail at the
    same path is the new size, and a kind no longer made (optimized switched off) is removed."""
    root = tmp_path / "media"
    photo = smooth_photo(400, 300, quality=98)
    [media_id] = await derived_rows(
        pool, Store.from_config(derive_config(root).storage), [(photo, "image/jpeg")]
    )
    await run_derive(derive_config(root, derive_thumbnail_px="64"), db_url)
    before = await row(pool, media_id)
    assert opened(before["derivatives"]["thumbnail"]).size == (64, 48)
    assert derived_files(root, "optimized", before["sha256_sum"])

    assert await derive_commands.requeue(pool, everything=True) == [media_id]
    smaller = derive_config(root, derive_thumbnail_px="32", derive_optimized="false")
    await run_derive(smaller, db_url)
    after = await row(pool, media_id)
    assert after["derive_status"] == "completed"
    thumbnail = after["derivatives"]["thumbnail"]
    assert thumbnail["path"] == before["derivatives"]["thumbnail"]["path"]
    assert opened(thumbnail).size == (32, 24) == (thumbnail["width"], thumbnail["height"])
    assert thumbnail["sha256"] != before["derivatives"]["thumbnail"]["sha256"]
    # nginx serves derived/ as immutable: new bytes at the same path need a new URL, or a cache
    # would serve the old thumbnail forever. The URL names the file's path and its own digest.
    old_url = before["derivatives"]["thumbnail"]["url"]
    assert thumbnail["url"] != old_url and after["thumbnail_url"] == thumbnail["url"]
    assert thumbnail["url"].partition("?")[0] == old_url.partition("?")[0]
    assert thumbnail["url"].endswith(f"?v={thumbnail['sha256'][:16]}")
    assert "optimized" not in after["derivatives"]
    assert derived_files(root, "optimized", after["sha256_sum"]) == []
    assert [e["details"]["stage"] for e in events(after, "requeued")] == ["derive"]


async def test_mediad_derive_takes_every_row_of_the_same_bytes(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """Naming one row, or its post, re-queues the rows that share its bytes too (they share
    its files)."""
    cfg = derive_config(tmp_path / "media")
    data = media.jpeg(seed=31)
    files = [(data, "image/jpeg"), (data, "image/jpeg"), (media.png(), "image/png")]
    ids = await derived_rows(pool, Store.from_config(cfg.storage), files)
    await run_derive(cfg, db_url)
    assert sorted(await derive_commands.requeue(pool, media_ids=[ids[0]])) == sorted(ids[:2])
    assert (await row(pool, ids[2]))["derive_status"] == "completed"
    # --post-id: the post's rows (with the rows sharing their bytes), no other post's.
    first_post = (await row(pool, ids[0]))["post_id"]
    await run_derive(cfg, db_url)
    assert sorted(await derive_commands.requeue(pool, post_id=first_post)) == sorted(ids[:2])
    assert (await row(pool, ids[2]))["derive_status"] == "completed"
    assert (await row(pool, ids[1]))["derive_status"] == "not_started"


async def test_verify_finds_damaged_derivatives_and_repair_makes_them_again(
    db_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """verify re-hashes every derivative: a flipped byte and a deleted file are damage; with
    repair they are made again, every row sharing the bytes records the new files, and a
    second check is clean."""
    cfg = derive_config(tmp_path / "media")
    store = Store.from_config(cfg.storage)
    data = phone_photo(seed=3)
    ids = await derived_rows(pool, store, [(data, "image/jpeg")] * 2)
    await run_derive(cfg, db_url)
    derivatives = (await row(pool, ids[0]))["derivatives"]
    thumbnail, preview = derivatives["thumbnail"]["path"], derivatives["preview"]["path"]
    flip_a_byte(thumbnail)
    os.unlink(preview)

    report = verify.Report()
    await derive_commands.check(pool, store, report)
    assert report.derivatives_checked == 4  # thumbnail, preview, optimized, public: shared
    assert {(d.kind, d.where) for d in report.remaining} == {
        ("derivative_corrupt", thumbnail), ("derivative_missing", preview),
    }  # fmt: skip

    async with DecoderPool.open(cfg.media) as decoders:
        deriver = derive.Deriver(cfg.derive, store, decoders, pool, storage_node=store.node)
        report = verify.Report()
        await derive_commands.check(pool, store, report, rederive=deriver.rederive)
    assert report.damage and report.remaining == []
    for media_id in ids:
        r = await row(pool, media_id)
        assert [e["event"] for e in r["ai_analysis_log"]][-1] == "derivatives_repaired"
        for entry in r["derivatives"].values():
            if not entry.get("original"):
                assert store.verify(Path(entry["path"]), entry["sha256"])
    report = verify.Report()
    await derive_commands.check(pool, store, report)
    assert report.damage == []

"""The local analysis backend end to end, on pictures and videos the tests render: OCR text,
hashes, colours, the blank flag, the document's shape, refusals, and no network at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from mediad import errors
from mediad.analysis import hashes, local, ocr
from mediad.media import decoder_worker, frames
from tests import media

Write = Callable[[bytes, str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write bytes to a file named `name` under tmp_path and return its path."""

    def _write(data: bytes, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return _write


def _archive_png(write: Write) -> Path:
    return write(media.encoded(media.text_picture("ARCHIVE 2026 MEDIA")), "archive.png")


def test_ocr_reads_the_words_of_a_rendered_picture(write: Write) -> None:
    """OCR reads "ARCHIVE 2026 MEDIA" rendered black on white exactly, boxed where it was drawn."""
    result = local.analyze_image_file(_archive_png(write))

    assert result["visible_text"] == "ARCHIVE 2026 MEDIA"
    (line,) = result["ocr"]["lines"]
    assert line["text"] == "ARCHIVE 2026 MEDIA"
    assert line["confidence"] > 0.9
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (60, 300), "ARCHIVE 2026 MEDIA", font=ImageFont.load_default(size=72)
    )
    xs = [x for x, _ in line["box"]]
    ys = [y for _, y in line["box"]]
    assert abs(min(xs) - left) < 15 and abs(max(xs) - right) < 15
    assert abs(min(ys) - top) < 15 and abs(max(ys) - bottom) < 15
    assert "text" in result["tags"]
    assert result["description"].startswith('Text: "ARCHIVE 2026 MEDIA"')


def test_document_has_the_schema_fields_and_is_json(write: Write) -> None:
    """The document carries the common fields, the local ones, and survives a JSON round trip."""
    result = local.analyze_image_file(_archive_png(write))

    assert result["schema"] == "mediad.analysis/1"
    assert result["backend"] == "local"
    assert result["model"].startswith("rapidocr-") and "PP-OCR" in result["model"]
    assert result["prompt_sha256"] == local.settings_sha256()
    assert result["objects"] == []
    assert {"description", "tags", "visible_text", "language", "ocr", "hashes"} <= set(result)
    assert {"colors", "blank", "width", "height"} <= set(result)
    assert (result["width"], result["height"]) == (1080, 720)
    assert json.loads(json.dumps(result)) == result


def test_language_is_named_for_a_sentence_and_not_for_a_few_words(write: Write) -> None:
    """An English sentence is "en"; three capitalised words name no language rather than a guess."""
    picture = media.text_picture("the quick brown fox jumps over the lazy dog", size=40)
    sentence = local.analyze_image_file(write(media.encoded(picture), "sentence.png"))
    words = local.analyze_image_file(_archive_png(write))

    assert sentence["language"] == "en"
    assert sentence["ocr"]["language"]["confidence"] >= 0.6
    assert words["language"] is None


def test_a_large_picture_is_downscaled_and_boxes_are_in_its_own_pixels(write: Write) -> None:
    """A 2160x1440 picture is read at max_px, and its boxes come back in original pixels."""
    picture = media.text_picture("HARBOUR LIGHTS", 2160, 1440, size=144, position=(200, 600))
    result = local.analyze_image_file(write(media.encoded(picture), "big.png"), max_px=800)

    assert result["visible_text"] == "HARBOUR LIGHTS"
    assert (result["width"], result["height"]) == (2160, 1440)
    xs = [x for x, _ in result["ocr"]["lines"][0]["box"]]
    assert 170 < min(xs) < 230
    assert max(xs) > 1000  # the text is about 1100 original pixels wide


def test_exif_orientation_is_applied_before_reading(write: Write) -> None:
    """A JPEG stored sideways with EXIF orientation 6 is read upright, at its shown size."""
    upright = media.text_picture("SIDEWAYS NOTE", 800, 600, size=72, position=(60, 250))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    stored = upright.rotate(90, expand=True)
    result = local.analyze_image_file(
        write(media.encoded(stored, "JPEG", quality=90, exif=exif), "sideways.jpg")
    )

    assert result["visible_text"] == "SIDEWAYS NOTE"
    assert (result["width"], result["height"]) == (800, 600)


def test_reencoded_copy_is_a_near_duplicate_and_another_photo_is_not(write: Write) -> None:
    """A JPEG q60 copy at 90% size is a near-duplicate of the original; another photo is far."""
    lines = ["SUMMER MARKET", "OPEN SUNDAY"]
    original = media.photo_with_text(lines, seed=1)
    smaller = original.resize((972, 648), Image.Resampling.LANCZOS)
    other = media.photo_with_text(["WINTER FAIR", "CLOSED MONDAY"], seed=2)

    first = local.analyze_image_file(write(media.encoded(original), "original.png"))
    copy = local.analyze_image_file(write(media.encoded(smaller, "JPEG", quality=60), "copy.jpg"))
    different = local.analyze_image_file(write(media.encoded(other), "other.png"))

    assert first["visible_text"] == copy["visible_text"] == "SUMMER MARKET\nOPEN SUNDAY"
    assert hashes.near_duplicate(first["hashes"], copy["hashes"])
    assert hashes.hamming(first["hashes"]["dhash"], copy["hashes"]["dhash"]) <= 3
    assert hashes.hamming(first["hashes"]["phash"], copy["hashes"]["phash"]) <= 3
    assert not hashes.near_duplicate(first["hashes"], different["hashes"])
    assert hashes.hamming(first["hashes"]["phash256"], different["hashes"]["phash256"]) > 64
    assert first["hashes"]["quality"] == 100
    assert first["blank"]["is_blank"] is False


def test_two_text_on_white_pictures_are_not_near_duplicates(write: Write) -> None:
    """ "SALE" and "OPEN" on white collide in both 64-bit hashes, yet are no near-duplicates:
    phash256 tells them apart even without the OCR text's fingerprint."""
    sale, open_ = (
        local.analyze_image_file(write(media.encoded(media.text_picture(word)), f"{word}.png"))[
            "hashes"
        ]
        for word in ("SALE", "OPEN")
    )

    # The collision the rule exists for: each 64-bit hash alone would merge them.
    assert hashes.hamming(sale["dhash"], open_["dhash"]) <= hashes.MAX_DISTANCE
    assert hashes.hamming(sale["phash"], open_["phash"]) <= hashes.MAX_DISTANCE
    assert sale["text"] != open_["text"]
    assert not hashes.near_duplicate(sale, open_)
    assert not hashes.near_duplicate({**sale, "text": None}, {**open_, "text": None})


def test_two_colour_picture_gives_both_colours_and_their_shares(write: Write) -> None:
    """A picture 70% #c81e1e and 30% #1428c8 has exactly those two dominant colours."""
    picture = Image.new("RGB", (1000, 600), "#c81e1e")
    ImageDraw.Draw(picture).rectangle((700, 0, 999, 599), fill="#1428c8")
    result = local.analyze_image_file(write(media.encoded(picture), "flag.png"))

    first, second, *rest = result["colors"]
    assert (first["hex"], first["name"]) == ("#c81e1e", "red")
    assert (second["hex"], second["name"]) == ("#1428c8", "blue")
    assert abs(first["share"] - 0.7) < 0.02 and abs(second["share"] - 0.3) < 0.02
    assert sum(c["share"] for c in rest) < 0.02
    assert {"red", "blue"} <= set(result["tags"])
    assert result["blank"]["is_blank"] is False
    assert "mostly red (#c81e1e)" in result["description"]


def test_single_colour_placeholder_is_blank(write: Write) -> None:
    """A flat #dddddd picture is blank: single_color, its colour named, and tagged blank."""
    picture = Image.new("RGB", (640, 480), "#dddddd")
    result = local.analyze_image_file(write(media.encoded(picture), "placeholder.png"))

    assert result["blank"] == {"is_blank": True, "reason": "single_color", "color": "#dddddd"}
    assert result["visible_text"] == ""
    assert result["colors"] == [{"hex": "#dddddd", "name": "gray", "share": 1.0}]
    assert "blank" in result["tags"]
    assert result["description"].startswith("Blank: a single color, #dddddd")
    # Its hashes are no ground for a match: a blank picture has no detail.
    assert result["hashes"]["quality"] == 0
    assert not hashes.near_duplicate(result["hashes"], result["hashes"])


def test_near_uniform_jpeg_is_blank_and_a_photo_like_picture_is_not(write: Write) -> None:
    """A grey fill with faint noise saved as JPEG is near_uniform; photo-like noise is not blank."""
    faint = Image.blend(
        Image.new("RGB", (640, 480), (120, 120, 120)), media.noise_image(640, 480), 0.02
    )
    grey = local.analyze_image_file(write(media.encoded(faint, "JPEG", quality=80), "grey.jpg"))
    photo = local.analyze_image_file(
        write(media.encoded(media.photo_like(640, 480, seed=3), "JPEG"), "photo.jpg")
    )
    noise = local.analyze_image_file(write(media.png(640, 480, seed=4), "noise.png"))

    assert grey["blank"]["is_blank"] is True
    assert grey["blank"]["reason"] == "near_uniform"
    assert photo["blank"]["is_blank"] is False
    assert noise["blank"]["is_blank"] is False
    assert len(photo["colors"]) >= 3


def test_tracking_pixel_is_blank_as_tiny(write: Write) -> None:
    """A 1x1 GIF is blank for being tiny, with its one colour."""
    pixel = media.encoded(Image.new("RGB", (1, 1), "white"), "GIF")
    result = local.analyze_image_file(write(pixel, "pixel.gif"))

    assert result["blank"] == {"is_blank": True, "reason": "tiny", "color": "#ffffff"}


def test_a_picture_over_the_pixel_bound_is_refused_before_decoding(write: Write) -> None:
    """A PNG claiming 100000x100000 pixels, or any over max_pixels, is MediaTooLargeError."""
    with pytest.raises(errors.MediaTooLargeError) as caught:
        local.analyze_image_file(write(media.png_claiming_size(100_000, 100_000), "bomb.png"))
    assert caught.value.error_code == "too_large"

    with pytest.raises(errors.MediaTooLargeError):
        local.analyze_image_file(write(media.png(64, 48), "small.png"), max_pixels=1000)


def test_ocr_sessions_are_single_threaded_and_plan_no_memory_patterns(write: Write) -> None:
    """Every onnxruntime session of the engine runs one thread and keeps no per-shape memory
    pattern (each picture's shape would keep one: the address space grows)."""
    local.analyze_image_file(_archive_png(write))
    engine = ocr._engine(1)
    sessions = [
        part.session.session for part in (engine.text_det, engine.text_cls, engine.text_rec)
    ]

    for session in sessions:
        options = session.get_session_options()
        assert options.enable_mem_pattern is False
        assert options.intra_op_num_threads == 1


def test_damaged_and_non_media_files_are_refused_with_media_errors(write: Write) -> None:
    """A cut-off PNG is corrupt_media; a text file is not_media; an MP3 is unsupported."""
    with pytest.raises(errors.CorruptMediaError):
        local.analyze_image_file(write(media.png(256, 256)[:300], "cut.png"))
    with pytest.raises(errors.NotMediaError):
        local.analyze_file(write(b"just some words\n" * 20, "notes.txt"))
    with pytest.raises(errors.UnsupportedMediaError):
        local.analyze_file(write(media.audio_mp3(0.2), "song.mp3"))


def test_video_frames_at_25_50_and_75_percent_are_analysed(write: Write) -> None:
    """A video of five captions has the frames at 25, 50 and 75% read, and merged in order."""
    video = media.captioned_mp4(["INTRO", "ALPHA", "BRAVO", "CHARLIE", "OUTRO"])
    result = local.analyze_file(write(video, "captions.mp4"))

    assert [f["position"] for f in result["frames"]] == [0.25, 0.5, 0.75]
    assert [f["time"] for f in result["frames"]] == [1.25, 2.5, 3.75]
    assert [f["ocr"]["text"] for f in result["frames"]] == ["ALPHA", "BRAVO", "CHARLIE"]
    assert result["visible_text"] == "ALPHA\nBRAVO\nCHARLIE"
    assert [line["frame"] for line in result["ocr"]["lines"]] == [0, 1, 2]
    assert result["duration"] == 5.0
    assert result["hashes"] == result["frames"][1]["hashes"]
    assert result["colors"][0]["hex"] == "#ffffff"
    assert result["tags"][:2] == ["video", "text"]
    assert result["description"].startswith("Video of 5 s, 3 frames")
    assert json.loads(json.dumps(result)) == result


def test_portrait_video_frames_are_turned_upright(write: Write) -> None:
    """A video stored sideways with a 90-degree display rotation is analysed as shown."""
    video = media.captioned_mp4(
        ["HELLO"], width=240, height=320, size=48, rotation=90, corner_mark=True
    )
    path = write(video, "portrait.mp4")
    result = local.analyze_video_file(path, positions=(0.5,))
    _, (shown,) = frames.video_frames(path, "video/mp4", (0.5,), longest=1024)

    (frame,) = result["frames"]
    assert (frame["width"], frame["height"]) == (240, 320)
    assert frame["ocr"]["text"] == "HELLO"
    # The red mark is in the top-left corner as shown: the turn went the right way.
    red, green, blue = shown.picture.image.getpixel((8, 8))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, resource, socket, sys

    # The address space of a decoder worker (media.worker_memory's default, 1 GiB).
    resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))
    attempts = []

    def audit(event, args):
        inet = event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6)
        if inet or event in ("socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"):
            attempts.append(event)
            raise OSError(f"no network in this test: {event}")

    sys.addaudithook(audit)
    import mediad.media.decoder_worker  # a decoder worker's forkserver imports it first
    import av  # and has FFmpeg loaded for its probes
    from mediad.analysis import local

    # A worker serves one picture after another: its address space must hold for all of them.
    for _ in range(3):
        result = local.analyze_image_file(sys.argv[1])
    interfaces = sorted(name for _, name in socket.if_nameindex())
    print(json.dumps({"result": result, "attempts": attempts, "interfaces": interfaces}))
    """
)


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_analysis_runs_with_no_network_at_all(write: Write, tmp_path: Path) -> None:
    """In a fresh process with no network (its own empty network namespace where the kernel
    allows, `unshare -n`) and an audit hook refusing every connect and name lookup, a first
    analysis loads the engine and reads the picture right, having tried no network; all of it
    within a decoder worker's 1 GiB of address space, on the largest picture analysed, three
    times over."""
    square = media.text_picture("ARCHIVE 2026 MEDIA", 1400, 1400, size=96, position=(60, 600))
    path = write(media.encoded(square), "square.png")
    isolated = _unshare_works()
    prefix = ["unshare", "-n"] if isolated else []
    # Nothing of this process's environment decides how the worker's libraries run.
    env = {k: v for k, v in os.environ.items() if k not in decoder_worker.THREAD_COUNTS}
    env |= {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _OFFLINE_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert out["attempts"] == []
    assert out["result"]["visible_text"] == "ARCHIVE 2026 MEDIA"
    assert out["result"]["hashes"] == local.analyze_image_file(path)["hashes"]
    if isolated:
        assert out["interfaces"] == ["lo"]

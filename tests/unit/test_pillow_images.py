"""mediad's verdicts against Pillow's own, on the test images of Pillow's sdist: the decodable,
the damaged and the odd files Pillow's developers collected."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageFile

from mediad import errors
from mediad.media import jpeg, probe

# Pillow warns of what it steps over ("malformed MPO file", "Invalid APNG"...); the verdict is
# what counts.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _strict_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow as mediad runs it: a truncated image is an error, not a grey one."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)


def _jpegs(images: Path) -> list[Path]:
    return sorted(path for path in images.iterdir() if path.suffix in {".jpg", ".jpeg", ".mpo"})


def _pillow_frames(path: Path, pillow_format: str) -> int | None:
    """How many frames Pillow decodes from `path`, seeking to each; None if it refuses one."""
    try:
        with Image.open(path, formats=[pillow_format]) as img:
            frames = int(getattr(img, "n_frames", 1))
            for frame in range(frames):
                img.seek(frame)
                img.load()
    except Exception:
        return None
    return frames


def _probed_frames(path: Path) -> int | None:
    """The frame count probe_file reports for `path`; None if it refuses the file."""
    try:
        return int(probe.probe_file(path).metadata.get("frame_count", 1))
    except errors.MediaError:
        return None


def test_the_jpeg_walk_refuses_only_what_pillow_refuses(pillow_images: Path) -> None:
    """Every JPEG among Pillow's test images that Pillow decodes in full is whole to the walk."""
    decoded = [path for path in _jpegs(pillow_images) if _pillow_frames(path, "JPEG")]
    refused = []
    for path in decoded:
        try:
            jpeg.check_structure(path.read_bytes())
        except jpeg.JpegStructureError as exc:
            refused.append(f"{path.name}: {exc}")

    assert {"jpeg_ff00_header.jpg", "junk_jpeg_header.jpg"} <= {path.name for path in decoded}
    assert len(decoded) >= 50
    assert refused == []


def test_every_jpeg_pillow_decodes_is_kept(pillow_images: Path) -> None:
    """Each of Pillow's test JPEGs that Pillow decodes in full probes as image/jpeg."""
    lost = []
    for path in _jpegs(pillow_images):
        if _pillow_frames(path, "JPEG") is None:
            continue
        try:
            probe.probe_file(path)
        except errors.MediaError as exc:
            lost.append(f"{path.name}: {exc.error_code}: {exc}")

    assert lost == []


def test_animations_are_judged_as_decoding_every_frame_would(pillow_images: Path) -> None:
    """On Pillow's test GIFs, PNGs and APNGs, the probe (first frame decoded, the rest walked)
    keeps exactly the files whose every frame Pillow decodes, with Pillow's frame count."""
    files = [(path, "GIF") for path in sorted(pillow_images.glob("*.gif"))]
    files += [(path, "PNG") for path in sorted(pillow_images.glob("**/*.png"))]
    verdicts: dict[str, int | None] = {}
    disagreements = []
    for path, pillow_format in files:
        name = str(path.relative_to(pillow_images))
        verdicts[name] = expected = _pillow_frames(path, pillow_format)
        probed = _probed_frames(path)
        if probed != expected:
            disagreements.append(f"{name}: Pillow decodes {expected} frames, the probe {probed}")

    # The corpus holds what this is about: animations, and animations Pillow refuses part of.
    assert sum(1 for frames in verdicts.values() if frames and frames > 1) >= 40
    assert verdicts["apng/sequence_gap.png"] is None
    assert verdicts["decompression_bomb_extents.gif"] is None
    assert disagreements == []

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

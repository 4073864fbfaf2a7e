"""The price the decoder pool admits a derive at (derive_plan.decode_cost) covers the memory
the derive takes: a picture priced too low lets several decodes exceed media.decode_memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import media

# In a fresh process: libvips warmed up on a small picture first, so the peak above that is
# the derive's own.
_MEASURE = """
import json, sys
from mediad.media import derivatives, derive_plan
def peak():
    # VmHWM, not ru_maxrss: that one keeps the forked test process's peak across exec.
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
small, big, out = sys.argv[1:4]
def derive(path, outputs):
    derivatives.derive_task({"path": path, "mime_type": "image/png", "public": None,
        "outputs": [dict(o, path=f"{out}/{o['kind']}.{o['format']}") for o in outputs]})
derive(small, [{"kind": "thumbnail", "format": "webp", "px": 320}])
before = peak()
outputs = [{"kind": "thumbnail", "format": "webp", "px": 320},
           {"kind": "preview", "format": "webp", "px": 1280},
           {"kind": "optimized", "format": "jpeg", "px": 1920, "quality": 85}]
derive(big, outputs)
taken = peak() - before
header = derivatives.header_task({"path": big, "mime_type": "image/png"})
print(json.dumps({"taken": taken, "price": derive_plan.decode_cost(header, "image/png", 1920)}))
"""


# Wide and short: libvips holds rows of it, and buffers of its own, which the outputs' size
# alone does not show.
@pytest.mark.parametrize(("width", "height"), [(9000, 1500), (2000, 300)])
def test_a_streamed_png_is_priced_at_what_its_derive_takes(
    tmp_path: Path, width: int, height: int
) -> None:
    small, big = tmp_path / "small.png", tmp_path / "wide.png"
    small.write_bytes(media.png(200, 150))
    big.write_bytes(media.huge_png(width, height))
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(small), str(big), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout)
    assert measured["taken"] <= measured["price"] <= 3 * measured["taken"], measured

"""What the daemon's own process imports: every `mediad run` and `run --once` pays for it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests import media

# Loaded where they are used: Pillow's images and codecs (PIL.Image, its C core) and PyAV by the
# decoder workers (their forkserver preloads them; the stages plan a decode without them; the
# daemon reads a photo's EXIF with Pillow's tag tables alone, PIL.TiffTags and PIL.ExifTags,
# plain data), the HTTP endpoint only where http.listen is set, Jinja2 only for its first page
# (the test below). boto3 (aioboto3's layer) nowhere: the archive uses aiobotocore's client, and
# boto3 would cost every start 25-35 ms.
_LEFT_TO_OTHERS = ("PIL.Image", "PIL._imaging", "av", "jinja2", "mediad.http.server", "boto3")

_IMPORT_AS_THE_DAEMON_DOES = f"""
import json, sys
import mediad.cli, mediad.daemon
from mediad import stages
for declaration in stages.ALL:
    stages.opener(declaration)
import mediad.media.jpeg  # what the daemon's first photo imports (Downloader._store_photo)
print(json.dumps([name for name in {_LEFT_TO_OTHERS!r} if name in sys.modules]))
"""


def _printed_by(code: str, *args: str) -> Any:
    """What `code`, run in a fresh interpreter (with `args`), prints as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_daemon_with_every_stage_loads_no_decoder_library_nor_the_dashboard_nor_boto3() -> None:
    assert _printed_by(_IMPORT_AS_THE_DAEMON_DOES) == []


# The parent of several worker processes (mediad/supervisor.py) serves nothing and fetches
# nothing: it checks the endpoint's access rule, holds the database pool, the host gate and the
# eviction loop. aiohttp and the decoder pool cost it ~10 MB of memory and ~0.2 s of the start
# every worker waits for; the stage pools, which bring the metrics (prometheus_client), 2 MB.
_IMPORT_AS_THE_PARENT_DOES = """
import json, sys
import mediad.cli, mediad.daemon, mediad.supervisor
from mediad.http import access
unwanted = ("aiohttp", "PIL.Image", "mediad.media.decoders", "mediad.stages.download",
            "mediad.pool", "prometheus_client")
print(json.dumps([name for name in unwanted if name in sys.modules]))
"""


def test_the_parent_of_several_workers_loads_neither_the_http_client_nor_the_decoders() -> None:
    assert _printed_by(_IMPORT_AS_THE_PARENT_DOES) == []


_IMPORT_THE_ENDPOINT_AND_RENDER_A_PAGE = """
import json, sys
from mediad import daemon
daemon.http_endpoint()
served = "jinja2" in sys.modules
from mediad.http import pages
page = pages.render("missing.html", what="medium", name="<b>x</b>")
print(json.dumps([served, "jinja2" in sys.modules, "&lt;b&gt;x&lt;/b&gt;" in page]))
"""


def test_the_http_endpoint_loads_jinja2_only_for_its_first_page() -> None:
    # http.listen is set by default: every start serves /metrics, few ever ask for a page. Jinja2
    # comes with the first page, which is rendered as before: autoescaped.
    assert _printed_by(_IMPORT_THE_ENDPOINT_AND_RENDER_A_PAGE) == [False, True, True]


# A decoder worker is forked from a forkserver that imported the modules of the decoder tasks of
# the stages that are on, and the workers' side of the pool: the pool's side (asyncio,
# structlog, the configuration) and the other stages' decoders would cost every forkserver
# several MB that its workers share without ever running them. A download-only daemon's
# workers can still run another stage's task: its module is imported by its first request.
_DOWNLOAD_ONLY_DECODER_WORKER = """
import asyncio, json, sys, tempfile
from pathlib import Path
from mediad import config, stages
from mediad.media import decoders

cfg = config.load(None, env={"MEDIAD_DERIVE_ENABLED": "false"})
tasks = {**decoders.TASKS, "modules": "tests.decoder_tasks:loaded_modules"}
names = ["asyncio", "structlog", "mediad.config", "mediad.media.decoders", "PIL", "av",
         "mediad.media.derivatives", "mediad.analysis.local"]

async def main(picture):
    ready = {*stages.decoder_tasks(cfg), "modules"}
    media = cfg.media.__class__(workers=1)
    async with decoders.DecoderPool.open(media, tasks=tasks, ready=ready) as pool:
        before = await pool.run("modules", {"names": names})
        header = await pool.run("derive_header", {"path": str(picture), "mime_type": "image/png"})
        after = await pool.run("modules", {"names": names})
    print(json.dumps([sorted(ready), before["loaded"], header["width"], after["loaded"]]))

with tempfile.TemporaryDirectory() as folder:
    picture = Path(folder) / "a.png"
    picture.write_bytes(bytes.fromhex(sys.argv[1]))
    asyncio.run(main(picture))
"""


def test_a_download_only_daemon_decoder_workers_hold_only_the_download_stage_decoders() -> None:
    png = media.png(7, 5).hex()
    ready, before, width, after = _printed_by(_DOWNLOAD_ONLY_DECODER_WORKER, png)
    assert ready == ["image_header", "modules", "probe"]
    assert before == ["PIL", "av"]
    # Another stage's task still runs: its module is imported by its first request.
    assert width == 7
    assert after == ["PIL", "av", "mediad.media.derivatives"]

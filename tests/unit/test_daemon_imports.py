"""What the daemon's own process imports: every `mediad run` and `run --once` pays for it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# Loaded where they are used: Pillow and PyAV by the decoder workers (their forkserver preloads
# them; the stages plan a decode without them), the HTTP endpoint only where http.listen is set,
# Jinja2 only for its first page (the test below). boto3 (aioboto3's layer) nowhere: the archive
# uses aiobotocore's client, and boto3 would cost every start 25-35 ms.
_LEFT_TO_OTHERS = ("PIL", "av", "jinja2", "mediad.http.server", "boto3")

_IMPORT_AS_THE_DAEMON_DOES = f"""
import json, sys
import mediad.cli, mediad.daemon
from mediad import stages
for declaration in stages.ALL:
    stages.opener(declaration)
print(json.dumps([name for name in {_LEFT_TO_OTHERS!r} if name in sys.modules]))
"""


def _printed_by(code: str) -> Any:
    """What `code`, run in a fresh interpreter, prints as JSON."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_daemon_with_every_stage_loads_no_decoder_library_nor_the_dashboard_nor_boto3() -> None:
    assert _printed_by(_IMPORT_AS_THE_DAEMON_DOES) == []


# The parent of several worker processes (mediad/supervisor.py) serves nothing and fetches
# nothing: it checks the endpoint's access rule, holds the database pool, the host gate and the
# eviction loop. aiohttp and the decoder pool cost it ~10 MB of memory and ~0.2 s of the start
# every worker waits for.
_IMPORT_AS_THE_PARENT_DOES = """
import json, sys
import mediad.cli, mediad.daemon, mediad.supervisor
from mediad.http import access
unwanted = ("aiohttp", "PIL", "mediad.media.decoders", "mediad.stages.download")
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

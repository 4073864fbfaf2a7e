"""What the daemon's own process imports: every `mediad run` and `run --once` pays for it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# Loaded where they are used: PyAV by the decoder workers (their forkserver preloads it), the
# HTTP endpoint only where http.listen is set, Jinja2 only for its first page (the test below).
# boto3 (aioboto3's layer) nowhere: the archive uses aiobotocore's client, and boto3 would cost
# every start 25-35 ms.
_LEFT_TO_OTHERS = ("av", "jinja2", "mediad.http.server", "boto3")

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

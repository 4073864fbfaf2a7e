"""prometheus-client's multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set, the counters that
several worker processes increment are served summed by one process's exposition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WORKER = """
from mediad import metrics
metrics.count_outcome("download", "completed")
metrics.DOWNLOAD_BYTES.inc(1000)
"""

SERVER = """
from prometheus_client import generate_latest
from mediad.http.collectors import Exposition
print(generate_latest(Exposition([])).decode())
"""


def python(code: str, multiproc_dir: Path) -> str:
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_counters_of_several_processes_are_served_summed(tmp_path: Path) -> None:
    """Two processes each count a completed download and 1000 bytes; a third process's
    exposition shows 2 and 2000."""
    for _ in range(2):
        python(WORKER, tmp_path)
    text = python(SERVER, tmp_path)
    assert 'mediad_outcomes_total{error_code="",stage="download",status="completed"} 2.0' in text
    assert "mediad_download_bytes_total 2000.0" in text

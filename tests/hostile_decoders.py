"""Decoder tasks for tests only: a probe that stalls, so a test can kill its worker or let it
run past media.decode_timeout. Tests register it in place of the real probe.

The control lives beside the store (its root's `stall/` folder, found from the temp file's
path), since a worker's environment is its forkserver's, not the test's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mediad.media.probe import probe_task


def stalling_probe(payload: dict[str, Any]) -> dict[str, Any]:
    """Stall (writing this worker's pid where the test looks) until `stall/done` exists."""
    control = Path(payload["path"]).parents[1] / "stall"
    if control.is_dir() and not (control / "done").exists():
        (control / str(os.getpid())).write_text("stalling")
        while not (control / "done").exists():
            time.sleep(0.01)
    return probe_task(payload)

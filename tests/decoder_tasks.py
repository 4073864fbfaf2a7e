"""Decoder tasks for tests that look inside a worker; nothing here imports more than `sys`."""

from __future__ import annotations

import sys
from typing import Any


def loaded_modules(payload: dict[str, Any]) -> dict[str, Any]:
    """Which of the named modules this worker has imported."""
    return {"loaded": [name for name in payload["names"] if name in sys.modules]}

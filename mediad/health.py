"""Whether the daemon is alive: every stage loop keeps turning. The systemd watchdog and the
HTTP endpoint's /healthz ask this one test."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mediad.config import DaemonConfig

if TYPE_CHECKING:
    from mediad.pool import StagePool


def stuck_after(daemon: DaemonConfig) -> float:
    """Seconds without a turn after which a loop counts as stuck: an idle loop turns at least
    every poll interval, so three of them missed (or daemon.stuck_after) means it is wedged."""
    return max(3 * daemon.poll_interval, daemon.stuck_after)


def stuck_stages(pools: Sequence[StagePool], daemon: DaemonConfig) -> list[str]:
    """The stages whose loop has not turned within stuck_after; empty when all are alive."""
    now = time.monotonic()
    limit = stuck_after(daemon)
    return [p.stage.name for p in pools if now - p.last_tick > limit]

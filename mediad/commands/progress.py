"""The progress bar of a long `mediad import`: one line redrawn in place on a terminal.

Only for a terminal: in a pipe or a file, a carriage-return animation is noise, so the command
prints its per-file lines alone there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

# Redraws at most this often (seconds): a batch every few milliseconds need not repaint.
_REDRAW_EVERY = 0.1
_WIDTH = 24
_CLEAR_LINE = "\r\x1b[K"


class ImportProgress:
    """Files done of all, media queued and already queued, and media per second, on one line."""

    def __init__(
        self, stream: TextIO, files: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._files = files
        self._clock = clock
        self._started = clock()
        self._drawn_at: float | None = None
        self.files_done = 0
        self.queued = 0
        self.already_queued = 0

    def add(self, queued: int, already_queued: int) -> None:
        """Count a batch; redraw unless the line was drawn a moment ago."""
        self.queued += queued
        self.already_queued += already_queued
        if self._drawn_at is None or self._clock() - self._drawn_at >= _REDRAW_EVERY:
            self._draw()

    def file_done(self, line: str | None = None, stream: TextIO | None = None) -> None:
        """Count a finished file, printing `line` (its summary) above the bar."""
        self.files_done += 1
        if line is not None:
            self.say(line, stream or self._stream)
        else:
            self._draw()

    def say(self, line: str, stream: TextIO) -> None:
        """Print `line` on `stream` (stdout or stderr, one terminal) above the bar."""
        self._stream.write(_CLEAR_LINE)
        self._stream.flush()
        print(line, file=stream, flush=True)
        self._draw()

    def close(self) -> None:
        """Leave the final figures on screen."""
        self._draw()
        self._stream.write("\n")
        self._stream.flush()

    def line(self) -> str:
        """The bar as drawn now."""
        elapsed = self._clock() - self._started
        handled = self.queued + self.already_queued
        rate = handled / elapsed if elapsed > 0 else 0.0
        filled = _WIDTH * self.files_done // self._files if self._files else _WIDTH
        return (
            f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {self.files_done}/{self._files} files,"
            f" {self.queued:,} media queued, {self.already_queued:,} already queued,"
            f" {rate:,.0f} media/s"
        )

    def _draw(self) -> None:
        self._drawn_at = self._clock()
        self._stream.write(_CLEAR_LINE + self.line())
        self._stream.flush()

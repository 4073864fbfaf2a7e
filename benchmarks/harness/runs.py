"""One tool's pass over a set of files, as measured: the record every table reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmarks.harness import measure, report


@dataclass
class Run:
    """One tool's fetch or upload of `files` files, and whether its output checked out."""

    tool: str
    files: int
    bytes: int
    seconds: float  # from spawn to exit: every tool pays its own start-up
    ok: bool
    check: str
    # The work alone, start-up excluded (mediad: from the events in its rows).
    busy_seconds: float = math.nan
    startup_seconds: float = math.nan
    # Bytes. mediad: the peak of its whole process tree (decoder workers included), summed
    # over its processes (measure.ProcessTree); `own_peak_rss`: the daemon process's alone.
    peak_rss: float = math.nan
    own_peak_rss: float = math.nan
    peak_pss: float = math.nan  # mediad: the tree's, sampled less often (measure.ProcessTree)
    cpu_seconds: float = math.nan  # the tool's own, user + system, its descendants included
    # The part of `cpu_seconds` spent in processes that outlived the tool's main process
    # (mediad: the decoders' forkserver, its workers and multiprocessing's resource tracker).
    descendants_cpu_seconds: float = math.nan
    completed: int | None = None  # rows (mediad) whose check passed in full
    split: measure.CpuSplit = field(default_factory=measure.CpuSplit)
    transactions: int | None = None  # database transactions (mediad)

    @property
    def files_per_s(self) -> float:
        return report.rate(self.files, self.seconds)

    @property
    def mb_per_s(self) -> float:
        return report.rate(self.bytes, self.seconds) / report.MB

    @property
    def busy_files_per_s(self) -> float:
        return report.rate(self.files, self.busy_seconds)

    @property
    def busy_mb_per_s(self) -> float:
        return report.rate(self.bytes, self.busy_seconds) / report.MB

    @property
    def cpu_ms_per_file(self) -> float:
        return report.rate(self.cpu_seconds * 1000, self.files)

    @property
    def others(self) -> float:
        """CPUs busy, on average, with processes other than the tool and the servers."""
        return self.split.others(self.cpu_seconds)

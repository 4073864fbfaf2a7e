"""Host-wide limits divided among a host's worker processes (`daemon.processes`), so that N of
them together never exceed what one process would be allowed.

Each integer limit is split exactly: of `total` among `parts`, process i gets total // parts,
and the first total % parts get one more. A limit smaller than the process count leaves the
last processes with 0 of it: they do not run that stage at all (the first `concurrency`
processes run it), and the per-minute analysis limits then count only the processes running
analysis. What cannot be divided stays whole and is held by the parent instead:
per_host_concurrency and the host circuit breaker (mediad/net/hostgate.py). The daily analysis
budget is already read from the database, by every process and host alike.
"""

from __future__ import annotations

import dataclasses

from mediad.config import AnalysisConfig, Config


def share(total: int, parts: int, index: int) -> int:
    """Process `index`'s part of `total` split among `parts`: the parts sum to `total`."""
    return total // parts + (1 if index < total % parts else 0)


def _analysis_processes(analysis: AnalysisConfig, processes: int) -> int:
    """How many processes run analysis: no more than its concurrency, and no more than a
    per-minute limit can give one unit each (0 there means no limit, never "none")."""
    count = min(processes, analysis.concurrency)
    for rate in (analysis.requests_per_minute, analysis.tokens_per_minute):
        if rate > 0:
            count = min(count, rate)
    return count


def for_process(config: Config, index: int, processes: int) -> Config:
    """The config of worker process `index` of `processes`: its part of every host-wide limit."""

    def part(total: int) -> int:
        return share(total, processes, index)

    analysis = config.analysis
    runs_analysis = _analysis_processes(analysis, processes)
    if index < runs_analysis:

        def analysis_part(total: int) -> int:
            return share(total, runs_analysis, index)

        analysis = dataclasses.replace(
            analysis,
            concurrency=analysis_part(analysis.concurrency),
            requests_per_minute=analysis_part(analysis.requests_per_minute),
            tokens_per_minute=analysis_part(analysis.tokens_per_minute),
        )
    else:
        analysis = dataclasses.replace(analysis, concurrency=0)
    return dataclasses.replace(
        config,
        download=dataclasses.replace(
            config.download, concurrency=part(config.download.concurrency)
        ),
        archive=dataclasses.replace(config.archive, concurrency=part(config.archive.concurrency)),
        derive=dataclasses.replace(config.derive, concurrency=part(config.derive.concurrency)),
        analysis=analysis,
        media=dataclasses.replace(
            config.media,
            workers=part(config.media.worker_count),
            decode_memory=part(config.media.decode_memory),
        ),
        # Each worker is one process: a nested supervisor would multiply everything again.
        daemon=dataclasses.replace(config.daemon, processes=1),
    )


def useful_processes(config: Config, enabled: list[str]) -> int:
    """`daemon.process_count`, less the processes that would get no share of any enabled stage."""
    widest = max((stage_concurrency(config, name) for name in enabled), default=1)
    return max(1, min(config.daemon.process_count, widest))


def stage_concurrency(config: Config, stage: str) -> int:
    concurrency: int = getattr(config, stage).concurrency
    return concurrency

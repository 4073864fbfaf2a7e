"""The targets a benchmark prints and judges, and its exit status: 1 when any is missed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.harness import report


@dataclass(frozen=True)
class Target:
    """One measure against its goal: met at or above it, or, with `below`, under it."""

    measure: str
    value: float
    goal: float
    unit: str = "x"
    below: bool = False

    @property
    def met(self) -> bool:
        # NaN (a comparison that could not be computed) meets nothing.
        if math.isnan(self.value):
            return False
        return self.value < self.goal if self.below else self.value >= self.goal

    @property
    def value_text(self) -> str:
        digits = 2 if self.unit == "x" else 0
        return f"{self.value:.{digits}f}{self.unit}"

    @property
    def goal_text(self) -> str:
        return f"{'<' if self.below else '>='} {self.goal:g}{self.unit}"

    @property
    def met_text(self) -> str:
        return "yes" if self.met else "NO"


class Verdict:
    """Every run's check and every target judged in one benchmark; its exit status follows."""

    def __init__(self) -> None:
        self.checks: list[bool] = []
        self.targets: list[Target] = []
        self.unmeasured: list[str] = []

    def check(self, oks: Iterable[bool]) -> None:
        """Record whether each run's output checked out (a failed run fails the benchmark)."""
        self.checks.extend(oks)

    def judge(self, target: Target) -> Target:
        self.targets.append(target)
        return target

    def not_measured(self, what: str) -> None:
        """A target that could not be judged (a tool of its comparison skipped or failed)."""
        self.unmeasured.append(what)

    def print_targets(self, title: str, targets: Sequence[Target]) -> None:
        report.print_table(
            title,
            ["measure", "value", "target", "met"],
            [[t.measure, t.value_text, t.goal_text, t.met_text] for t in targets],
        )

    def exit_status(self) -> int:
        """Print the verdict; 0 when every run checked out and every target judged was met."""
        print()
        if not self.checks and not self.targets:
            print("nothing measured")
            return 1
        failed = self.checks.count(False)
        missed = [t.measure for t in self.targets if not t.met]
        if failed:
            print(f"{failed} run(s) FAILED their check: see above")
        if missed:
            print("TARGETS NOT MET: " + "; ".join(missed) + " (see the tables above)")
        if failed or missed:
            return 1
        if self.unmeasured:
            print("targets met where measured; not measured: " + ", ".join(self.unmeasured))
        elif not self.targets:
            print("no target evaluated")
        else:
            print("ALL TARGETS MET")
        return 0

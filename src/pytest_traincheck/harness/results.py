"""`Report`: the results of every check on every setup, as text or JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from pytest_traincheck.harness.check import CheckResult, Verdict, all_checks
from pytest_traincheck.harness.sparkline import sparkline

__all__ = ["Report", "summary_lines"]

MESSAGE_WIDTH = 90  # characters of a result's first message line in the summary
SPARK_WIDTH = 24  # characters of the loss sparkline of the check that records its series


@dataclass
class Report:
    """Results per setup plus what is needed to reproduce the run (seed, device, versions)."""

    results: list[CheckResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no check failed or errored."""
        return not self.problems

    @property
    def problems(self) -> list[CheckResult]:
        """Return the FAIL and ERROR results."""
        return [r for r in self.results if r.verdict.is_problem]

    @property
    def warnings(self) -> list[CheckResult]:
        """Return the WARN results."""
        return [r for r in self.results if r.verdict is Verdict.WARN]

    def by_setup(self) -> dict[str, list[CheckResult]]:
        """Group the results by setup name, in run order."""
        groups: dict[str, list[CheckResult]] = {}
        for r in self.results:
            groups.setdefault(r.setup, []).append(r)
        return groups

    def get(self, code: str, setup: str | None = None) -> CheckResult:
        """Return the result of ``code`` (for ``setup`` when several were checked)."""
        for r in self.results:
            if r.code == code and (setup is None or r.setup == setup):
                return r
        raise KeyError(code if setup is None else f"{setup}::{code}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: meta, then results grouped by setup."""
        return {"meta": self.meta, "ok": self.ok,
                "setups": {name: [r.to_dict() for r in rs] for name, rs in self.by_setup().items()}}

    def to_json(self, indent: int = 2) -> str:
        """Serialize the report as JSON."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def summary(self) -> str:
        """Return a table per setup: code, slug, verdict, time and a short message."""
        return "\n".join(summary_lines(self.results))

    def describe_problems(self) -> str:
        """Return the full text of every FAIL/ERROR (and WARN) result."""
        return "\n\n".join(r.describe() for r in self.problems + self.warnings)

    def __str__(self) -> str:
        return self.summary()


def summary_lines(results: Iterable[CheckResult]) -> list[str]:
    """Return a table per setup, in run order: code, slug, verdict, time, a short message (and the curve)."""
    by_setup: dict[str, list[CheckResult]] = {}
    for r in results:
        by_setup.setdefault(r.setup, []).append(r)
    checks = all_checks()
    lines = []
    for name, rs in by_setup.items():
        counts = {v: sum(r.verdict is v for r in rs) for v in Verdict}
        tally = ", ".join(f"{n} {v.value}" for v, n in counts.items() if n)
        lines.append(f"setup {name!r}: {tally}")
        width = max(len(r.title) for r in rs)
        for r in sorted(rs, key=lambda r: r.code):
            short = r.message.splitlines()[0] if r.message else ""
            if len(short) > MESSAGE_WIDTH:
                short = short[:MESSAGE_WIDTH - 3] + "..."
            cls = checks.get(r.code)
            curve = f"  {sparkline(r.curve, SPARK_WIDTH)}{_end(r.curve)}" if cls and cls.RECORDS_SERIES and r.curve else ""
            lines.append(f"  {r.title:<{width}}  {r.verdict.name:<5}  {r.duration:5.2f}s  {short}{curve}")
    return lines


def _end(curve: list[float]) -> str:
    """Return the curve's end value and its share of the start, which the bars alone cannot show."""
    first, last = curve[0], curve[-1]
    share = ""
    if first > 0 and math.isfinite(first) and math.isfinite(last):
        ratio = last / first
        share = f" ({'<1%' if 0 <= ratio < 0.005 else f'{ratio:.0%}'} of start)"  # never a misleading 0%
    return f"  end {last:.3g}{share}"

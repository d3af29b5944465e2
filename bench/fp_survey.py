"""Lint a corpus of real PyTorch code that traincheck's authors did not write, and count findings per rule.

Run by hand (not in CI):

    python bench/fp_survey.py bench/corpus/torchvision bench/corpus/timm ...

`bench/corpus/` is filled by `python bench/lint_speed.py --fetch` (sources of
packages from the package index; never committed). Every finding of a
default-on rule on such code is either a real mistake or a false positive to
fix in the rule: `--show CODE` prints them for inspection.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from pytest_traincheck.config import LintConfig
from pytest_traincheck.lint import engine
from pytest_traincheck.lint.registry import all_rules


def main() -> int:
    """Lint the given folders with every rule and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--show", action="append", default=[], help="print the findings of this code prefix")
    parser.add_argument("--jobs", type=int, default=engine.default_jobs())
    args = parser.parse_args()
    config = LintConfig(select=["ALL"])
    start = time.perf_counter()
    summary, results, _ = engine.lint_paths(args.paths, config, jobs=args.jobs)
    elapsed = time.perf_counter() - start
    lines = 0
    for path in args.paths:
        lines += sum(len(p.read_bytes().splitlines()) for p in path.rglob("*.py"))
    counts = Counter(f.code for f in summary.findings)
    crashes = [f for f in summary.findings if f.code == "TRN001"]
    print(f"files: {summary.files_checked}  lines: {lines}  seconds: {elapsed:.1f}  crashes (TRN001): {len(crashes)}")
    print("| code | name | default | findings |")
    print("| --- | --- | --- | --- |")
    for rule in all_rules():
        print(f"| {rule.CODE} | {rule.name()} | {'on' if rule.DEFAULT_ON else 'off'} | {counts.get(rule.CODE, 0)} |")
    print(f"| TRN000 | syntax-error | on | {counts.get('TRN000', 0)} |")
    for finding in summary.findings:
        if any(finding.code.startswith(p) for p in args.show) or finding.code == "TRN001":
            print(f"{finding.path}:{finding.line}:{finding.column}: {finding.code} {finding.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

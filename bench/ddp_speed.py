"""Time the distributed checks (TRN7xx): the whole suite on examples/ddp's setup, on 2 and 3 CPU ranks.

Run by hand, not in CI:

    python bench/ddp_speed.py              # 2 and 3 ranks, 3 repeats each
    python bench/ddp_speed.py --repeat 5

Prints, per world size, the median wall time of the six distributed checks (each
forks its ranks, joins a gloo group through a file store, runs, gathers, and
stops every rank) and of one check, next to the single-process suite on the same
setup for scale. Target: the distributed suite well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from pytest_traincheck import run_checks
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import enabled_codes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "ddp"))
from ddp_example.train import make_training  # noqa: E402


def timed(training: object, select: list[str]) -> tuple[float, dict[str, float]]:
    """Return the suite's wall time and each check's, failing loudly on a non-PASS verdict."""
    start = time.perf_counter()
    report = run_checks(training, select=select, strict=True)
    total = time.perf_counter() - start
    bad = [r for r in report.results if r.verdict not in (Verdict.PASS, Verdict.SKIP)]
    if bad:
        raise SystemExit("unexpected verdicts:\n" + "\n".join(r.describe() for r in bad))
    return total, {r.code: r.duration for r in report.results}


def main() -> None:
    """Time the suites and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    distributed = [c for c in enabled_codes() if c.startswith("TRN7")]
    single = [c for c in enabled_codes() if not c.startswith("TRN7")]
    training = make_training()
    timed(training, ["TRN701"])  # warm-up: lazy imports, first fork
    base = statistics.median(timed(training, single)[0] for _ in range(args.repeat))
    print(f"single-process suite ({len(single)} checks, 1 process): {base:.2f}s")
    for world in (2, 3):
        training.world_size = world
        runs = [timed(training, distributed) for _ in range(args.repeat)]
        total = statistics.median(t for t, _ in runs)
        per = {code: statistics.median(r[code] for _, r in runs) for code in distributed}
        slowest = max(per, key=per.__getitem__)
        print(f"distributed suite, {world} ranks ({len(distributed)} checks): {total:.2f}s median of {args.repeat} "
              f"({total / base:.2f}x the single-process suite); per check {min(per.values()):.2f}-"
              f"{per[slowest]:.2f}s (slowest {slowest})")


if __name__ == "__main__":
    main()

"""TensorBoard output of a sanity run: the overfit loss curve, per-step gradient/update series, verdicts.

Nothing here imports tensorboard until a log directory is given. The series (gradient
norms and update ratios per parameter and step) come from a shared training run that
measured update ratios at every step, which is made only when a log directory is given,
so a run without ``--train-sanity-logdir`` pays nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Union

from pytest_traincheck.harness.check import CheckResult, all_checks

__all__ = ["TensorBoardLog", "TensorBoardMissing", "run_name"]

LOSS_TAG = "overfit/loss"
INSTALL_HINT = "--train-sanity-logdir needs the `tensorboard` package: pip install tensorboard"


class TensorBoardMissing(ImportError):
    """The `tensorboard` package (needed by torch's SummaryWriter) is not installed."""


_RUN = re.compile(r".+-seed\d+(?:-run(\d+))?")


def run_name(setup: str, seed: int, run: int = 1) -> str:
    """Return the run directory name for one setup, seed and invocation, safe as a path component."""
    base = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', setup).strip('._') or 'setup'}-seed{seed}"
    return base if run <= 1 else f"{base}-run{run}"


def next_run(logdir: Union[str, Path]) -> int:
    """Return the number of a new invocation: one more than any run folder already in ``logdir``."""
    folder = Path(logdir)
    if not folder.is_dir():
        return 1
    numbers = [int(m.group(1) or 1) for p in folder.iterdir() if p.is_dir() and (m := _RUN.fullmatch(p.name))]
    return max(numbers, default=0) + 1


def summary_writer_class() -> Any:
    """Return torch's SummaryWriter, or raise `TensorBoardMissing` with a one-line install hint."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardMissing(INSTALL_HINT) from None
    return SummaryWriter


class TensorBoardLog:
    """Write one TensorBoard run per setup and invocation: ``<logdir>/<setup>-seed<seed>[-run<N>]``.

    Each invocation gets fresh folders (``-run2``, ``-run3``... once earlier runs are there), so a
    re-run never adds a second event file to an old run, whose curves TensorBoard would overlay.
    """

    def __init__(self, logdir: Union[str, Path], seed: int, run: Optional[int] = None) -> None:
        self.logdir, self.seed = Path(logdir), seed
        self.run = next_run(logdir) if run is None else run
        self.writer_class = summary_writer_class()  # fail at start, not after the first check
        self.writers: dict[str, Any] = {}

    def run_dir(self, setup: str) -> Path:
        """Return where the events of ``setup`` go."""
        return self.logdir / run_name(setup, self.seed, self.run)

    def add(self, result: CheckResult, series: Optional[dict[str, list[float]]] = None) -> None:
        """Log one check's verdict as text, its loss curve and any per-step series as scalars."""
        writer = self._writer(result.setup)
        writer.add_text(f"verdicts/{result.code}", _verdict_text(result), global_step=0)
        if result.curve and all_checks()[result.code].RECORDS_SERIES:  # the overfit loss curve
            for step, value in enumerate(result.curve, 1):
                writer.add_scalar(LOSS_TAG, value, global_step=step)
        for tag, values in sorted((series or {}).items()):
            for step, value in enumerate(values, 1):
                writer.add_scalar(tag, value, global_step=step)
        writer.flush()

    def close(self) -> None:
        """Flush and close every writer."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def _writer(self, setup: str) -> Any:
        if setup not in self.writers:
            self.writers[setup] = self.writer_class(log_dir=str(self.run_dir(setup)))
        return self.writers[setup]


def _verdict_text(result: CheckResult) -> str:
    # TensorBoard renders text as markdown.
    lines = [f"**{result.verdict.name}** `{result.title}`", "", result.message]
    if result.evidence:
        facts = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.evidence.items())
        lines += ["", "evidence: " + ", ".join(facts)]
    if result.fix and result.verdict.value in ("fail", "warn"):
        lines += ["", f"fix: {result.fix}"]
    return "\n".join(lines)

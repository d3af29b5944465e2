"""TRN406: evaluation samples that also appear in the training data (CHECKS.md D16)."""

from __future__ import annotations

from typing import Any, Optional

from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness
from pytest_traincheck.harness.datapass import sample

WARN_SHARE, FAIL_SHARE = 0.05, 0.5  # deepchecks' 5%; over half means "evaluating on the training set"
FAIL_MIN_MATCHES = 10  # a FAIL needs this many duplicates, not a ratio over a handful of samples


def _split(n: int = 64, test: int = 16, leak: int = 0) -> tuple[Any, Any]:
    x, y = ex.blobs(n)
    train = TensorDataset(x[test - leak:], y[test - leak:])  # `leak` test samples stay in the training part
    return DataLoader(train, batch_size=16, shuffle=True), DataLoader(TensorDataset(x[:test], y[:test]), batch_size=8)


def _with_split(leak: int) -> Any:
    train, test = _split(leak=leak)
    return ex.setup(data=train, eval_data=test)


def _eval_on_train() -> Any:
    train, _ = _split()
    return ex.setup(data=train, eval_data=train)


class TrainTestOverlap(Check):
    """Warn when more than 5% of evaluation samples are exact copies of training samples.

    ## What it measures
    Hashes each sample's input bytes (dtype and shape included) for up to 2048 training and
    evaluation samples and counts evaluation samples that are exact copies of training samples. When
    only part of the training set was read, the share is scaled up by the fraction read.

    ## Why it matters
    Evaluation samples seen in training make the reported accuracy a measure of memorization, not
    generalization.

    ## Thresholds
    Warns above 5% (deepchecks' threshold); fails above 50% with at least 10 copies ("evaluating on
    the training set"). It warns; `--train-sanity-strict` makes the warning fail the run. Fixed;
    turn the check off with `--train-sanity-ignore TRN406` (or `ignore` in
    `[tool.traincheck.sanity]`).

    ## Known problems
    Only exact duplicates are seen: different transforms for the two splits (random augmentation,
    another resize) hide a leak. Needs `eval_data=`; without it the fixed batch is used for both and
    nothing is judged.

    ## Example
    ```python
    Training(..., data=train_loader, eval_data=train_loader)
    ```
    """

    CODE = "TRN406"
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: _with_split(0), lambda: ex.setup(eval_data=[ex.blobs(seed=1)]))
    FAILING = (lambda: _with_split(4), (_eval_on_train, Verdict.FAIL))

    def run(self, h: Harness) -> CheckResult:
        t = h.training
        if t.eval_data is None:
            return self.skipped("no `eval_data` declared: nothing to compare the training data with")
        for where, data in (("data", t.data), ("eval_data", t.eval_data)):
            reason = _data.one_shot_reason(data)
            if reason is not None:
                return self.skipped(reason.replace("`data`", f"`{where}`"))
        cap = _data.max_samples(t, self.CODE)
        train = sample(h, "data", cap, inputs=False, targets=False, hashes=True)
        evals = sample(h, "eval_data", cap, inputs=False, targets=False, hashes=True)
        train_hashes, eval_hashes = set(train.hashes), evals.hashes
        matched = sum(d in train_hashes for d in eval_hashes)
        scale = 1.0 if train.exhausted else self._scale(t.data, train.samples)
        share = min(1.0, matched / max(len(eval_hashes), 1) * (scale or 1.0))
        facts = dict(eval_samples=len(eval_hashes), train_samples=train.samples, duplicates=matched,
                     estimated_share=share, same_object=t.eval_data is t.data)
        if share <= WARN_SHARE:
            return self.passed(f"{matched}/{len(eval_hashes)} evaluation samples also occur among "
                               f"{train.samples} training samples ({share:.1%} estimated)", **facts)
        return self._finding(share, matched, len(eval_hashes), train.samples, scale, facts)

    @staticmethod
    def _scale(data: Any, read: int) -> Optional[float]:
        try:
            total = len(data.dataset) if isinstance(data, DataLoader) else None
        except TypeError:
            total = None
        return total / read if total and read else None

    def _finding(self, share: float, matched: int, evals: int, read: int, scale: Optional[float],
                 facts: dict[str, Any]) -> CheckResult:
        scaled = f", scaled by {scale:.3g} for the unread part of the training set" if scale and scale > 1 else ""
        same = " (`eval_data` is the training loader itself)" if facts["same_object"] else ""
        message = (f"{matched}/{evals} evaluation samples are exact copies of samples among {read} training "
                   f"samples{same}: an estimated {share:.0%} of the evaluation data was trained on{scaled}, so "
                   "the evaluation metric overstates generalization; split the data once into disjoint "
                   "train/validation/test sets (deduplicate first)")
        if share >= FAIL_SHARE and matched >= FAIL_MIN_MATCHES:
            return self.failed(message, **facts)
        return self.warned(message, **facts)

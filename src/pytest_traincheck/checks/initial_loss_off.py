"""TRN604: the loss at initialization is far from its expected value (CHECKS.md D2)."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness
from pytest_traincheck.harness.record import classes_of

LOW, HIGH = 0.5, 2.0  # accepted band around the expected initial loss
HIGH_MSE = 10.0  # regression outputs vary at init; only flag predictions far off the targets' scale


def _overconfident() -> nn.Module:
    model = ex.MLP()
    with torch.no_grad():
        model.fc2.weight.mul_(50)  # huge initial logits: confidently wrong on most samples
    return model


def _regression() -> Any:
    x, _ = ex.blobs()
    return ex.setup(model=lambda: ex.MLP(out=1), loss_fn=nn.MSELoss(), data=[(x, x[:, :1] * 0.3)])


def _log_softmax_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    return ex.good_step(lambda inp: torch.log_softmax(model(inp), dim=1), (x, y), optimizer, loss_fn)


class InitialLossOff(Check):
    """Warn when the first loss is far from ln(C), the label-prior entropy, or the target variance.

    ## What it measures
    Computes the loss of the freshly initialized model on the fixed batch and compares it with its
    expected value: ln C for C-class cross entropy, the entropy of the label prior for binary cross
    entropy, the targets' variance for MSE.

    ## Why it matters
    A first loss far from its expectation means an overconfident initialization, a wrong output size
    or a mismatched loss; training then spends its first epochs undoing the initialization, or never
    recovers.

    ## Thresholds
    Warns when the initial loss is outside [0.5, 2] times the expected value (10 times for MSE,
    whose outputs vary at initialization). It warns; `--train-sanity-strict` makes the warning fail
    the run. Fixed; turn the check off with `--train-sanity-ignore TRN604` (or `ignore` in
    `[tool.traincheck.sanity]`).

    ## Known problems
    Label smoothing, class weights and custom losses change the expected value; the check judges
    only the losses it recognizes.

    ## Example
    ```python
    nn.init.normal_(model.fc.weight, std=10.0)   # logits in the hundreds at step 0
    ```
    """

    CODE = "TRN604"
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(), lambda: ex.setup(step=None), _regression)
    FAILING = (lambda: ex.setup(model=_overconfident),
               lambda: ex.setup(model=_overconfident, loss_fn=nn.NLLLoss(), step=_log_softmax_step))

    def run(self, h: Harness) -> CheckResult:
        rec = h.record(1)
        loss, calls, classes = rec.losses[0], rec.first_step_calls, classes_of(h, rec)
        if not calls:
            return self.skipped("the step uses no recognized loss (cross_entropy, nll_loss, BCE, MSE)")
        call = calls[0]
        if not math.isfinite(loss):  # nan compares false with every bound: never let it read as a pass
            return self.warned(f"the initial loss is not finite ({loss}): the first {call.kind} is computed on "
                               "non-finite inputs or outputs, so its distance from the expected value cannot be "
                               "measured; TRN601 finds where the values stop being finite",
                               initial_loss=str(loss), loss=call.kind)
        expected, what = self._expected(call, classes)
        if expected is None:
            return self.skipped(what)
        low = LOW * expected
        high = max(HIGH * expected, 1.1 * math.log(2)) if call.kind.startswith("binary") else HIGH * expected
        if call.kind == "mse_loss":
            low, high = 0.0, HIGH_MSE * expected  # a model may start closer than the mean predictor
        facts = dict(initial_loss=loss, expected=expected, loss=call.kind)
        if low <= loss <= high:
            return self.passed(f"initial loss {loss:.4g} is close to {what} = {expected:.4g}", **facts)
        return self.warned(
            f"initial loss {loss:.4g} is {loss / expected:.2g}x {what} = {expected:.4g} "
            f"(accepted {low:.3g}..{high:.3g}): "
            "the output layer's initialization or the loss input is off; initialize the last layer so the "
            "first predictions are near-uniform (or match the label prior)", **facts)

    @staticmethod
    def _expected(call: Any, classes: Optional[int]) -> tuple[Optional[float], str]:
        if call.kind in ("cross_entropy", "nll_loss"):
            if not classes or classes < 2:
                return None, "cannot tell the number of classes (declare num_classes=)"
            return math.log(classes), f"ln({classes})"
        if call.kind.startswith("binary") and call.target is not None:
            p = float(call.target.float().mean())
            if p <= 0 or p >= 1:
                return None, "the batch holds a single label, so the label-prior entropy is 0"
            return -(p * math.log(p) + (1 - p) * math.log(1 - p)), f"the label-prior entropy (p={p:.2f})"
        if call.kind == "mse_loss" and call.target is not None:
            y, pred = call.target.double(), call.input.double()
            expected = float(((y - pred.mean()) ** 2).mean())
            if expected <= 0:
                return None, "the targets are constant"
            return expected, "the mean predictor's MSE"
        return None, f"no reference value for {call.kind}"

"""TRN204: sigmoid output handed to BCELoss, or to BCEWithLogitsLoss (a double sigmoid)."""

from __future__ import annotations

from typing import Any

from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness


def _binary(model: Any, loss: nn.Module) -> Any:
    return ex.setup(model=model, loss_fn=loss, data=[ex.binary_blobs()])


def _logits() -> nn.Module:
    return ex.MLP(out=1)


def _probabilities() -> nn.Module:
    return nn.Sequential(ex.MLP(out=1), nn.Sigmoid())


class SigmoidBeforeBCE(Check):
    """Fail when a binary cross entropy input was produced by sigmoid (traced through views).

    ## What it measures
    Runs one step and inspects every input of `binary_cross_entropy` (`nn.BCELoss`) and
    `binary_cross_entropy_with_logits` (`nn.BCEWithLogitsLoss`) for a `SigmoidBackward0` in its
    `grad_fn`.

    ## Why it matters
    `BCELoss` on sigmoid outputs loses precision for confident predictions (log of values rounded to
    0 or 1); `BCEWithLogitsLoss` on sigmoid outputs applies sigmoid twice, squashing every
    prediction into (0.5, 0.73), so the model cannot fit.

    ## Thresholds
    Fails on any sigmoid-produced input. Fixed; turn the check off with `--train-sanity-ignore
    TRN204` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Skipped when the step calls no binary cross entropy. Probabilities produced without torch's
    sigmoid (a hand-written `1 / (1 + exp(-x))`) are not recognized.

    ## Example
    ```python
    loss = nn.BCELoss()(torch.sigmoid(model(x)), y)
    ```
    """

    CODE = "TRN204"
    PASSING = (lambda: _binary(_logits, nn.BCEWithLogitsLoss()),)
    FAILING = (lambda: _binary(_probabilities, nn.BCELoss()),
               lambda: _binary(_probabilities, nn.BCEWithLogitsLoss()))

    def run(self, h: Harness) -> CheckResult:
        calls = [c for c in h.record(1).first_step_calls if c.kind.startswith("binary_cross_entropy")]
        if not calls:
            return self.skipped("the training step does not call binary cross entropy")
        for call in calls:
            if call.source != "Sigmoid":
                continue
            if call.kind == "binary_cross_entropy_with_logits":
                return self.failed(
                    "the input of binary_cross_entropy_with_logits was produced by sigmoid (grad_fn "
                    "SigmoidBackward0): the loss applies sigmoid again, squashing every prediction into "
                    "(0.5, 0.73); pass the raw logits", source="Sigmoid", loss=call.kind)
            return self.failed(
                "the input of binary_cross_entropy (BCELoss) was produced by sigmoid (grad_fn SigmoidBackward0), "
                f"values in [{float(call.input.min()):.3g}, {float(call.input.max()):.3g}]; this is numerically "
                "unstable for confident predictions; drop the sigmoid and use `nn.BCEWithLogitsLoss` on the logits",
                source="Sigmoid", loss=call.kind)
        return self.passed(f"{len(calls)} binary cross entropy call(s); none received a sigmoid output")

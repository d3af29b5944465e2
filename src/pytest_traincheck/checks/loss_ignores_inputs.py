"""TRN607: the model trains no better on the real inputs than on zeroed inputs (CHECKS.md D15)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness, MissingField

MARGIN = 0.9  # the real-input loss must end at least 10% below the zero-input loss
TAIL = 3  # the zero-input loss is the mean of its last steps, robust to one noisy step


class InputDropoutTypo(ex.MLP):
    """The example MLP with `nn.Dropout(1.0)` on its inputs (meant: 0.1): training never sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.input_drop = nn.Dropout(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.input_drop(x))


def _zeros_into_model(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    # A step that feeds the wrong tensor (a zero placeholder) to the model.
    x, y = batch
    return ex.good_step(model, (torch.zeros_like(x), y), optimizer, loss_fn)


class LossIgnoresInputs(Check):
    """Warn when training on the real inputs gets the loss no lower than training on zeroed inputs.

    ## What it measures
    Trains on the fixed batch with the real inputs and, separately, with the inputs replaced by
    zeros (same targets), and compares the final losses (the zero-input loss is the mean of its last
    3 steps). Stochastic: retried with 2 more seeds.

    ## Why it matters
    If zeroed inputs train as well as real ones, the model does not use its inputs: they are
    detached, overwritten, or the targets leak into the model another way.

    ## Thresholds
    Warns unless the real-input loss ends at least 10% below the zero-input loss. It warns;
    `--train-sanity-strict` makes the warning fail the run. Fixed; turn the check off with
    `--train-sanity-ignore TRN607` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Tasks whose targets are nearly constant (the batch's best constant prediction is already close
    to perfect) may warn.

    ## Example
    ```python
    def forward(self, x):
        x = torch.zeros_like(x)   # a typo: the input never reaches the layers
        return self.fc(x)
    ```
    """

    CODE = "TRN607"
    STOCHASTIC = True
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(), lambda: ex.setup(step=None),
               lambda: ex.setup(model=lambda: ex.MLP(dropout=0.2, batchnorm=True)))
    FAILING = (lambda: ex.setup(model=InputDropoutTypo), lambda: ex.setup(step=_zeros_into_model))

    def run(self, h: Harness) -> CheckResult:
        steps = max(h.training.overfit_steps // 2, TAIL)
        zero = _with_zero_inputs(h)
        torch.manual_seed(h.seed)  # both runs start from the same initial weights
        with zero.session() as s:
            zero_losses = s.train(steps)
        baseline = sum(zero_losses[-TAIL:]) / len(zero_losses[-TAIL:])
        if not math.isfinite(baseline):
            return self.skipped(f"the zero-input run's loss became {baseline} (see TRN603); nothing to compare")
        if baseline <= 0.1 * abs(zero_losses[0]) or baseline <= 1e-6:
            return self.skipped(f"the batch's targets are fit without any input (loss {zero_losses[0]:.4g} -> "
                                f"{baseline:.4g} on zeroed inputs), e.g. a single class: the comparison says nothing")
        torch.manual_seed(h.seed)
        with h.session() as s:
            real_losses = s.train(steps, stop=lambda losses: losses[-1] <= MARGIN * baseline)
        best = min(real_losses)
        facts: dict[str, Any] = dict(real_loss=best, zero_input_loss=baseline, steps=steps,
                                     ratio=best / baseline, initial_loss=real_losses[0])
        if not best <= MARGIN * baseline:
            return self.warned(
                f"after {steps} steps on one batch, the best loss on the real inputs ({best:.4g}) is not 10% below "
                f"the loss on zeroed inputs ({baseline:.4g}; ratio {best / baseline:.2f}, need <= {MARGIN:g}): the "
                "model does not use its inputs; check that they reach the model (input dropout, masking, a "
                "detached or replaced tensor) and that the step feeds the batch's inputs", curve=real_losses,
                **facts)
        return self.passed(f"real inputs reached loss {best:.4g} in {len(real_losses)} steps vs {baseline:.4g} "
                           f"on zeroed inputs after {steps}", **facts)


def _with_zero_inputs(h: Harness) -> Harness:
    """Return a harness over the same setup whose fixed batch has all-zero inputs (same targets)."""
    data = h.data
    batch = data.batch
    try:
        keep = data.part("targets")
    except MissingField:
        keep = None
    zeroed, count = tb.zero_part(batch, data.part("inputs"), keep)
    if not count:
        raise MissingField("the inputs of the batch hold no tensor to zero; declare `Training(inputs=...)`")
    zero = Harness(data.with_batch(zeroed), seed=h.seed, device=str(h.device))
    zero.clock = h.clock  # one time budget for the whole check
    return zero

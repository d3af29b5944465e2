"""TRN201: softmax probabilities handed to cross entropy (CHECKS.md D4 a/b)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness


def _softmax_model() -> nn.Module:
    return nn.Sequential(ex.MLP(), nn.Softmax(dim=1))


def _softmax_in_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(torch.softmax(model(x), dim=1), y)
    loss.backward()
    optimizer.step()
    return loss


def _log_softmax_model() -> nn.Module:
    # log_softmax into cross entropy is redundant but harmless: log_softmax is idempotent.
    return nn.Sequential(ex.MLP(), nn.LogSoftmax(dim=1))


def row_sums_deviation(t: torch.Tensor) -> float:
    """Return max |sum over the class dim - 1| when every value is in [0, 1], else inf."""
    if t.ndim < 2 or t.numel() == 0 or not t.is_floating_point() or bool((t < 0).any() or (t > 1).any()):
        return float("inf")
    return float((t.double().sum(dim=1) - 1).abs().max())


class SoftmaxBeforeCrossEntropy(Check):
    """Fail when the tensor given to cross_entropy came from softmax or is a probability table.

    ## What it measures
    Runs one step and inspects every input of `cross_entropy` (so `nn.CrossEntropyLoss` too): its
    `grad_fn` (a `SoftmaxBackward0`, also through a few reshapes) and its values (all in [0, 1] with
    class-dimension sums equal to 1).

    ## Why it matters
    Cross entropy applies log-softmax itself. Feeding it probabilities squashes the logits twice:
    gradients become tiny and training stalls at a high loss.

    ## Thresholds
    Fails when the input came from softmax or its rows sum to 1 within 1e-3. Fixed; Turn the check
    off with `--train-sanity-ignore TRN201` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Skipped when the step does not call cross entropy. A model whose raw outputs happen to be
    non-negative and normalized per row would be flagged.

    ## Example
    ```python
    out = torch.softmax(model(x), dim=1)
    loss = nn.CrossEntropyLoss()(out, y)
    ```
    """

    CODE = "TRN201"
    PASSING = (lambda: ex.setup(), lambda: ex.setup(model=_log_softmax_model))
    FAILING = (lambda: ex.setup(model=_softmax_model), lambda: ex.setup(step=_softmax_in_step))

    def run(self, h: Harness) -> CheckResult:
        calls = [c for c in h.record(1).first_step_calls if c.kind == "cross_entropy"]
        if not calls:
            return self.skipped("the training step does not call cross entropy")
        for call in calls:
            deviation = row_sums_deviation(call.input)
            if call.source == "Softmax" or deviation < 1e-3:
                how = ("was produced by softmax (grad_fn SoftmaxBackward0)" if call.source == "Softmax"
                       else "holds probabilities")
                return self.failed(
                    f"the input of cross_entropy {how}: every value is in [0, 1] and rows sum to 1 "
                    f"(max deviation {deviation:.1e}); cross entropy applies log-softmax itself, so gradients "
                    "shrink and training stalls; feed raw logits to `nn.CrossEntropyLoss`",
                    source=call.source or "values", row_sum_deviation=deviation,
                    input_min=float(call.input.min()), input_max=float(call.input.max()))
        return self.passed(f"{len(calls)} cross_entropy call(s) received logits",
                           input_min=float(calls[0].input.min()), input_max=float(calls[0].input.max()))

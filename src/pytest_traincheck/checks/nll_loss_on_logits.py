"""TRN205: NLLLoss given outputs that are not log-probabilities (CHECKS.md D4 c)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness


def _log_probs() -> nn.Module:
    return nn.Sequential(ex.MLP(), nn.LogSoftmax(dim=1))


def _log_of_softmax(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(torch.log(torch.softmax(model(x), dim=1)), y)
    loss.backward()
    optimizer.step()
    return loss


class NllLossOnLogits(Check):
    """Fail (both signals) or warn (one) when nll_loss inputs are not log-probabilities.

    ## What it measures
    Runs one step and inspects every input of `nll_loss` (`nn.NLLLoss`): log-probabilities are at
    most 0 and their `logsumexp` over classes is 0.

    ## Why it matters
    `NLLLoss` only picks the value of the target class; on raw logits it rewards making that logit
    large without normalizing against the others, so the loss goes to minus infinity while accuracy
    does not follow.

    ## Thresholds
    Fails when both signals fire (a value above 1e-6 and a logsumexp more than 1e-3 away from 0),
    warns when one does. Inputs produced by `log_softmax` pass. Fixed; Turn the check off with
    `--train-sanity-ignore TRN205` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Skipped when the step calls no `nll_loss`. Inputs with fewer than two dimensions are not judged.

    ## Example
    ```python
    loss = nn.NLLLoss()(model(x), y)   # the model returns logits
    ```
    """

    CODE = "TRN205"
    PASSING = (lambda: ex.setup(model=_log_probs, loss_fn=nn.NLLLoss()),
               lambda: ex.setup(loss_fn=nn.NLLLoss(), step=_log_of_softmax))
    FAILING = (lambda: ex.setup(loss_fn=nn.NLLLoss()),)

    def run(self, h: Harness) -> CheckResult:
        calls = [c for c in h.record(1).first_step_calls if c.kind == "nll_loss"]
        if not calls:
            return self.skipped("the training step does not call nll_loss")
        for call in calls:
            if call.source == "LogSoftmax" or call.input.ndim < 2:
                continue
            x = call.input.double()
            max_value = float(x.max())
            lse = float(torch.logsumexp(x, dim=1).abs().max())
            positive, unnormalized = max_value > 1e-6, lse > 1e-3
            if not (positive or unnormalized):
                continue
            message = (f"the input of nll_loss is not log-probabilities: max value {max_value:.3g} "
                       f"(log-probabilities are <= 0) and logsumexp over classes is {lse:.3g} away from 0; "
                       "apply `log_softmax(dim=1)` before `NLLLoss`, or use `CrossEntropyLoss` on the logits")
            result = self.failed if positive and unnormalized else self.warned
            return result(message, max_value=max_value, max_abs_logsumexp=lse, source=call.source or "none")
        return self.passed(f"{len(calls)} nll_loss call(s) received log-probabilities")

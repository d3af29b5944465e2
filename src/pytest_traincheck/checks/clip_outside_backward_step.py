"""TRN106: gradient clipping before backward() or after step(), where it has no effect (D7)."""

from __future__ import annotations

from typing import Any

import torch

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness
from pytest_traincheck.checks.missing_grad_clipping import _clipping_step, rnn_setup

STEPS = 3


def _clip_after_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    loss = ex.good_step(model, batch, optimizer, loss_fn)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    return loss


def _clip_before_backward(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad(set_to_none=False)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # no grads yet: a no-op
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


class ClipOutsideBackwardStep(Check):
    """Fail when a clip_grad_* call falls outside the backward() .. step() window.

    ## What it measures
    Runs the user's step 3 times and records, for every clip call, whether it came after that
    iteration's `backward()` and before its `optimizer.step()`.

    ## Why it matters
    Clipping before `backward()` clips the previous (or empty) gradients, and clipping after
    `step()` clips gradients already applied: either way the update is not bounded, though the code
    looks as if it were.

    ## Thresholds
    Any clip call outside the backward..step window fails. Fixed; turn the check off with
    `--train-sanity-ignore TRN106` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs the user's own step. Clipping of tensors other than the model's gradients is not told
    apart from gradient clipping.

    ## Example
    ```python
    loss.backward()
    optimizer.step()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    ```
    """

    CODE = "TRN106"
    NEEDS_STEP = True
    PASSING = (lambda: rnn_setup(step=_clipping_step),)
    FAILING = (lambda: rnn_setup(step=_clip_after_step), lambda: rnn_setup(step=_clip_before_backward))

    def run(self, h: Harness) -> CheckResult:
        return self.per_optimizer(h.record(STEPS).by_optimizer(), lambda trace: self._judge(trace.clips))

    def _judge(self, clips: list[Any]) -> CheckResult:
        if not clips:
            return self.skipped("the training step does not call clip_grad_norm_/clip_grad_value_")
        bad = [c for c in clips if not c.effective]
        if bad:
            first = bad[0]
            return self.failed(
                f"{first.function} ran {first.position} ({len(bad)} of {len(clips)} clip calls), where it does "
                "not change the update: the step uses unclipped gradients; "
                "clip after `loss.backward()` and before `optimizer.step()`",
                function=first.function, position=first.position, misplaced_calls=len(bad), clip_calls=len(clips))
        return self.passed(f"{len(clips)} clip call(s), all between backward() and step()", clip_calls=len(clips))

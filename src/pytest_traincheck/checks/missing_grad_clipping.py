"""TRN105: a recurrent model trained without gradient clipping (CHECKS.md D7)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness

STEPS = 3
_RECURRENT = (nn.RNNBase, nn.RNNCellBase)


def _clipping_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    return loss


def _manual_clip_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    # Clipping traincheck cannot see by name is still seen by its effect on the gradient norm.
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    for g in grads:
        g.mul_(min(1.0, 1e-3 / float(total)))
    optimizer.step()
    return loss


def rnn_setup(**overrides: Any) -> Any:
    """Return a recurrent classifier setup."""
    fields: dict[str, Any] = dict(model=ex.RecurrentNet, data=[ex.sequences()])
    fields.update(overrides)
    return ex.setup(**fields)


class MissingGradClipping(Check):
    """Warn when a recurrent model (or one declared `clip=True`) trains with no clipping.

    ## What it measures
    For a model with a recurrent layer (RNN, LSTM, GRU or their cells), or a setup declared with
    `clip=True`, runs the user's step 3 times and records calls of `clip_grad_norm_`,
    `clip_grad_value_` (any import path, also bound copies in the user's modules) and in-place
    clamps of `.grad`.

    ## Why it matters
    Backpropagation through time multiplies gradients over every time step; one long or unusual
    sequence can produce a gradient large enough to ruin the weights. Clipping bounds the update.

    ## Thresholds
    Warns when no clipping happened in any of the steps; the evidence names the largest gradient
    norm seen and its step. It warns; `--train-sanity-strict` makes the warning fail the run.
    Declare `clip=False` on the `Training` for a recurrent model that needs no clipping, or turn the
    check off with `--train-sanity-ignore TRN105` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs the user's own step. Clipping done by a library inside the step (Lightning's
    `gradient_clip_val`) is seen only when it calls torch's clip functions.

    ## Example
    ```python
    loss.backward()
    optimizer.step()   # an LSTM, and no clip_grad_norm_ in between
    ```
    """

    CODE = "TRN105"
    NEEDS_STEP = True
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: rnn_setup(step=_clipping_step), lambda: rnn_setup(step=_manual_clip_step))
    FAILING = (lambda: rnn_setup(), lambda: ex.setup(clip=True))

    def run(self, h: Harness) -> CheckResult:
        if h.training.clip is False:
            return self.skipped("clipping not expected: the setup declares clip=False")
        trace = h.record(STEPS)
        recurrent = [n for n, kind in trace.modules if issubclass(kind, _RECURRENT)]
        if not recurrent and not h.training.clip:
            return self.skipped("the model has no RNN/LSTM/GRU layer (declare clip=True to expect clipping)")
        clipped_by_value = [r for r in trace.steps
                            if r.had_backward and 0 < r.norm_at_step < 0.999 * r.norm_after_backward]
        if trace.clips or clipped_by_value:
            how = trace.clips[0].function if trace.clips else "a gradient-norm reduction between backward and step"
            return self.passed(f"gradients are clipped ({how})", clip_calls=len(trace.clips))
        largest = max(trace.steps, key=lambda r: r.norm_at_step, default=None)
        norm = largest.norm_at_step if largest is not None else 0.0
        at = f" (step {largest.index + 1})" if largest is not None else ""
        what = f"has recurrent layer `{recurrent[0]}`" if recurrent else "declares clip=True"
        return self.warned(
            f"the model {what} but no clip_grad_norm_/clip_grad_value_ call (and no reduction of the gradient "
            f"norm between backward and step) was seen in {len(trace.steps)} steps; the largest gradient norm was "
            f"{norm:.3g}{at}; call `torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)` "
            "between `backward()` and `step()`", steps=len(trace.steps), max_grad_norm=norm)

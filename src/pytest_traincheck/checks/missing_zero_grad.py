"""TRN101: gradients carried over from the previous optimizer step (CHECKS.md D3)."""

from __future__ import annotations

from typing import Any

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness

STEPS = 3


def _no_zero_grad(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def _zero_to_zeros(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad(set_to_none=False)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def _accumulate_two(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    # Two backward calls per step is gradient accumulation, which is allowed.
    x, y = batch
    half = len(x) // 2
    for part in (slice(0, half), slice(half, None)):
        loss = loss_fn(model(x[part]), y[part]) / 2
        loss.backward()
    optimizer.step()
    model.zero_grad()
    return loss


class MissingZeroGrad(Check):
    """Fail when backward() adds onto the gradients of the previous optimizer step.

    ## What it measures
    Runs the user's step 3 times on the same batch. After each `optimizer.step()` it records every
    stepped parameter's gradient; when the next `backward()` starts it checks whether that gradient
    is still there (bit-identical and non-zero), so that backward adds onto it.

    ## Why it matters
    Gradients accumulate in `.grad`. Without `zero_grad()` each step uses the sum of all past
    gradients: the effective learning rate grows every step and the loss oscillates or diverges,
    with no error.

    ## Thresholds
    Any stale gradient fails (the first one is named with its step). Several `backward()` calls
    between two steps are gradient accumulation and pass. Fixed; Turn the check off with
    `--train-sanity-ignore TRN101` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs the user's own `step` or `train_epoch`; skipped otherwise. A step that clears gradients
    some other way (`p.grad = None`, `zero_grad(set_to_none=False)`) passes, as it should.

    ## Example
    ```python
    def step(model, batch, optimizer, loss_fn):
        x, y = batch
        loss = loss_fn(model(x), y)   # no optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    ```
    """

    CODE = "TRN101"
    NEEDS_STEP = True
    PASSING = (lambda: ex.setup(), lambda: ex.setup(step=_zero_to_zeros), lambda: ex.setup(step=_accumulate_two))
    FAILING = (lambda: ex.setup(step=_no_zero_grad),)

    def run(self, h: Harness) -> CheckResult:
        shared = h.record(STEPS)  # the shared run: every step it took is evidence
        # Several optimizers (a GAN): one model's gradients may be added to by another's loss, harmless
        # when its own optimizer clears them before it steps again.
        several = len(shared.by_optimizer()) > 1
        return self.per_optimizer(shared.by_optimizer(), lambda trace: self._judge(trace, several))

    def _judge(self, trace: Any, several: bool) -> CheckResult:
        stale = [r for r in trace.stale
                 if not (several and (r.step in trace.cleared_stale or r.step >= len(trace.steps)))]
        if not trace.steps:
            return self.skipped("the training step never called `step()` on the optimizer it was given")
        if stale:
            order = {name: i for i, name in enumerate(trace.names)}
            first = min(stale, key=lambda r: (r.step, order.get(r.param, len(order))))
            return self.failed(
                f"after {first.step + 1} training steps on the same batch, `{first.param}.grad` still held the "
                f"previous step's gradient when backward() ran, and then equaled the sum of both steps' gradients "
                f"(max abs diff {first.max_abs_diff:.1e}): gradients are not cleared; "
                "call `optimizer.zero_grad()` before `loss.backward()`",
                step=first.step + 1, param=first.param, max_abs_diff=first.max_abs_diff,
                stale_grad_norm=first.stale_norm, stale_params=len({r.param for r in stale}))
        return self.passed(
            f"{len(trace.steps)} optimizer steps: every gradient was cleared before the next backward()",
            steps=len(trace.steps))

"""TRN103: `optimizer.step()` runs with no backward() since the previous step."""

from __future__ import annotations

from typing import Any

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness

STEPS = 2


def _step_first(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    optimizer.step()
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss


def _lbfgs_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    # A closure optimizer runs backward inside step(); that is not a missing backward.
    x, y = batch

    def closure() -> Any:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    return optimizer.step(closure)


class StepWithoutBackward(Check):
    """Fail when a step() is not preceded by any backward() since the previous step().

    ## What it measures
    Runs the user's step twice and records, at each `optimizer.step()`, whether any `backward()` ran
    since the previous step (or since the step function started).

    ## Why it matters
    A step before backward applies no gradient on the first iteration and the previous iteration's
    gradient afterwards: training lags one batch behind or does nothing.

    ## Thresholds
    Any step with no backward before it fails. Fixed; turn the check off with `--train-sanity-ignore
    TRN103` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs the user's own step. Steps with a closure (L-BFGS calls backward inside the closure) pass.

    ## Example
    ```python
    optimizer.zero_grad()
    optimizer.step()
    loss = loss_fn(model(x), y)
    loss.backward()
    ```
    """

    CODE = "TRN103"
    NEEDS_STEP = True
    PASSING = (lambda: ex.setup(),
               lambda: ex.setup(step=_lbfgs_step, optimizer=lambda p: __import__("torch").optim.LBFGS(p, max_iter=2)))
    FAILING = (lambda: ex.setup(step=_step_first),)

    def run(self, h: Harness) -> CheckResult:
        return self.per_optimizer(h.record(STEPS).by_optimizer(), self._judge)

    def _judge(self, trace: Any) -> CheckResult:
        if not trace.steps:
            return self.skipped("the training step never called `step()` on the optimizer it was given")
        total = len(trace.optimized)
        cut = {c.step for c in trace.cuts}  # backward() ran but reached no parameter: TRN109 finding
        for rec in trace.steps:
            if not rec.had_backward and not rec.closure and rec.index not in cut:
                return self.failed(
                    f"optimizer.step() #{rec.index + 1} ran with no backward() since the "
                    f"{'previous step' if rec.index else 'start of the step'} ({len(rec.grads_none)} of {total} "
                    "parameters had grad None), so it applied no gradient or a stale one; "
                    "call `loss.backward()` before `optimizer.step()`",
                    step=rec.index + 1, grads_none=len(rec.grads_none), params=total)
        note = f" ({len(cut)} of them reached no parameter: see TRN109)" if cut else ""
        return self.passed(f"each of {len(trace.steps)} optimizer steps followed a backward(){note}")

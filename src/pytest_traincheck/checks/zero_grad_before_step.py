"""TRN102: `optimizer.step()` sees only zeroed gradients after a backward()."""

from __future__ import annotations

from typing import Any

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness

STEPS = 2


def _zero_between(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.zero_grad()  # noqa: TRN102 - the mistake this check exists to catch
    optimizer.step()
    return loss


def _zeros_between(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    loss = loss_fn(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=False)  # noqa: TRN102 - the mistake this check exists to catch
    optimizer.step()
    return loss


class ZeroGradBeforeStep(Check):
    """Fail when every gradient is None or zero at step() although backward() produced some.

    ## What it measures
    Runs the user's step twice and looks at the gradients `optimizer.step()` sees: a step that
    follows a `backward()` which produced non-zero gradients, yet finds every parameter's gradient
    None or all-zero, had them cleared in between.

    ## Why it matters
    `zero_grad()` between `backward()` and `step()` throws the gradients away: the optimizer steps
    with nothing (or only weight decay and momentum), and the model does not learn.

    ## Thresholds
    Fails only when every parameter in the optimizer has an empty gradient at such a step. Fixed;
    turn the check off with `--train-sanity-ignore TRN102` (or `ignore` in
    `[tool.traincheck.sanity]`).

    ## Known problems
    Needs the user's own step. Skipped when backward produced no non-zero gradient (nothing to
    judge). Steps with a closure (L-BFGS) are not judged.

    ## Example
    ```python
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    ```
    """

    CODE = "TRN102"
    NEEDS_STEP = True
    PASSING = (lambda: ex.setup(),)
    FAILING = (lambda: ex.setup(step=_zero_between), lambda: ex.setup(step=_zeros_between))

    def run(self, h: Harness) -> CheckResult:
        return self.per_optimizer(h.record(STEPS).by_optimizer(), self._judge)

    def _judge(self, trace: Any) -> CheckResult:
        if not trace.steps:
            return self.skipped("the training step never called `step()` on the optimizer it was given")
        if not trace.nonzero:
            return self.skipped("backward() produced no non-zero gradient, so the order cannot be judged")
        for rec in trace.steps:
            total = len(trace.optimized)
            empty = len(rec.grads_none) + len(rec.grads_zero)
            if rec.had_backward and not rec.closure and total and empty == total:
                cause = ("zero_grad() ran between backward() and step()" if rec.zero_grad_after_backward
                         else "the gradients were cleared between backward() and step()")
                return self.failed(
                    f"optimizer.step() #{rec.index + 1} ran right after backward() but saw no gradient: "
                    f"{len(rec.grads_none)} of {total} parameters had grad None and {len(rec.grads_zero)} "
                    f"an all-zero grad ({cause}), so the step changed nothing useful; "
                    "order the loop zero_grad -> forward -> loss -> backward -> step",
                    step=rec.index + 1, grads_none=len(rec.grads_none), grads_zero=len(rec.grads_zero),
                    params=total, zero_grad_after_backward=rec.zero_grad_after_backward)
        return self.passed(f"{len(trace.steps)} optimizer steps each saw the gradients of the preceding backward()")

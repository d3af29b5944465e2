"""TRN601: the user's step cannot overfit one fixed batch (CHECKS.md D1)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import SEVERAL_OPTIMIZERS, Harness, several_optimizers
from pytest_traincheck.harness.record import OVERFIT_RATIO, Record

TARGET_RATIO = OVERFIT_RATIO  # PASS once the loss reaches 10% of its initial value
STALL_RATIO = 1 - 1e-3  # FAIL when the best loss never gets below 99.9% of the initial value


def _no_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss


def _shuffled_labels(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    # Labels that change every step cannot be memorized: the loss plateaus.
    x, y = batch
    return ex.good_step(model, (x, y[__import__("torch").randperm(len(y))]), optimizer, loss_fn)


def own_objectives(h: Harness, rec: Record) -> Optional[str]:
    """Return why several optimizers do not minimize one loss the step returns (a GAN), or None when they do.

    They minimize one loss when the step runs one backward() per call and every optimizer steps
    once per update on it (a body and a head, an encoder and a decoder). Several backward() calls
    per update (each player's loss), or optimizers that step in turn, are several objectives.
    """
    if not several_optimizers(h.training) or not rec.backward_calls:
        return None  # one optimizer, or a run that failed before any backward(): judged (or re-raised) as usual
    steps = {name: len(r.steps) for name, r in rec.by_optimizer().items()}
    updates = rec.backward_calls / h.training.accumulate
    if len(set(steps.values())) == 1 and next(iter(steps.values())) == updates:
        return None
    counts = ", ".join(f"`{name}` {n}" for name, n in steps.items())
    return (f"{SEVERAL_OPTIMIZERS} (the step ran {rec.backward_calls} backward() calls for optimizer steps {counts}: "
            "each optimizer follows its own loss)")


def _zeroed_before_step(model: Any, batch: Any, optimizers: Any, loss_fn: Any) -> Any:
    # zero_grad() between backward() and step(): every optimizer steps on zero gradients.
    x, y = batch
    loss = loss_fn(model["head"](model["body"](x)), y)
    loss.backward()
    for opt in optimizers.values():
        opt.zero_grad()
        opt.step()
    return loss


class CannotOverfitSingleBatch(Check):
    """Fail when repeated steps on one batch do not drive its loss near zero.

    ## What it measures
    Runs the user's step up to `overfit_steps` times (100 by default) on one fixed batch and records
    the loss curve, stopping early once the loss is below 10% of its first value and, for
    classification, the batch is predicted perfectly. Stochastic: a setup that does not pass is
    retried with 2 more seeds. Its curve is drawn in the summary and, with `--train-sanity-logdir`,
    written to TensorBoard.

    ## Why it matters
    A model that cannot memorize 16 samples cannot learn the dataset: a broken step, a frozen model,
    a wrong loss or a learning rate far off all show up here first, in seconds instead of after an
    epoch.

    ## Thresholds
    Passes when the best loss reaches 10% of the initial loss (and, for classification, 100% batch
    accuracy); fails when it never gets below 99.9% of the initial loss, or becomes NaN/Inf; warns
    in between. Give slow learners more steps with `Training(..., overfit_steps=300)` or a larger
    learning rate for the test. Turn the check off with `--train-sanity-ignore TRN601` (or `ignore`
    in `[tool.traincheck.sanity]`).

    ## Known problems
    With several optimizers the check runs when they minimize one loss together (one backward() per
    update, every optimizer stepping on it: a body and a head, an encoder and a decoder). It is
    skipped for several objectives (a GAN: each player's loss has its own backward() and the returned
    loss is not expected to fall), and for optimizers that step on separate losses of their own.
    Heavily regularized models (strong dropout, large weight decay) and tiny learning rates may only
    warn. Losses that do not start positive are judged on accuracy.

    ## Example
    ```python
    def step(model, batch, optimizer, loss_fn):
        optimizer.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        return loss            # optimizer.step() forgotten
    ```
    """

    CODE = "TRN601"
    STOCHASTIC = True
    RECORDS_SERIES = True
    PASSING = (lambda: ex.setup(), lambda: ex.setup(step=None), lambda: ex.two_models())
    FAILING = (lambda: ex.setup(step=_no_step), lambda: dataclasses.replace(ex.two_models(), step=_zeroed_before_step))

    def run(self, h: Harness) -> CheckResult:
        # The shared run trains until this check's question is answered (record.OVERFIT_RATIO).
        rec = h.record(raise_error=False, ratios=h.series is not None)  # ratios: for TensorBoard
        reason = own_objectives(h, rec)
        if reason is not None:
            return self.skipped(reason)
        if rec.overfit_end is None:
            rec.need(h.training.overfit_steps)
        assert rec.overfit_end is not None
        if h.series is not None:  # the per-step series of the steps judged here
            h.series.clear()
            h.series.update(rec.series(rec.overfit_end))
        return self._verdict(rec.losses[:rec.overfit_end], rec.overfit_accuracy, h.training.overfit_steps)

    def _verdict(self, losses: list[float], accuracy: float | None, steps: int) -> CheckResult:
        first, n = losses[0], len(losses)
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        facts: dict[str, Any] = dict(initial_loss=first, steps=n, batch_accuracy=accuracy)
        if bad is not None:
            return self.failed(f"the loss became {losses[bad]} at step {bad + 1} of {n} on one fixed batch; "
                               "see TRN603 for where the non-finite value starts", curve=losses, **facts)
        best = min(losses)
        facts["min_loss"] = best
        acc_text = f", batch accuracy {accuracy:.0%}" if accuracy is not None else ""
        loss_ok = best <= TARGET_RATIO * first or first <= 0
        if loss_ok and accuracy in (None, 1.0):
            return self.passed(f"loss fell from {first:.4g} to {best:.4g} in {n} steps{acc_text}",
                               curve=losses, **facts)
        if best >= STALL_RATIO * first:
            return self.failed(
                f"after {n} steps on the same batch of samples the loss never went below its initial value "
                f"{first:.4g} (best {best:.4g}){acc_text}: the step does not learn; check that it calls "
                "`optimizer.step()`, that gradients reach the parameters, and the learning rate",
                curve=losses, **facts)
        if loss_ok:
            return self.warned(f"the loss fell from {first:.4g} to {best:.4g} in {n} steps but only {accuracy:.0%} "
                               "of the batch is predicted correctly; a model that can learn should memorize "
                               "one batch", curve=losses, **facts)
        return self.warned(
            f"after {n} steps on one batch the loss only fell from {first:.4g} to {best:.4g} "
            f"({best / first:.0%} of the start; expected <= {TARGET_RATIO:.0%}){acc_text}: the model or step learns "
            "too slowly to overfit; check the learning rate, the loss input and the model capacity",
            curve=losses, **facts)

"""TRN304: the training step runs the model in eval mode (CHECKS.md D6 b)."""

from __future__ import annotations

from typing import Any

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness import mode_examples as _modes
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness

STEPS = 2


def _step_in_eval(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    model.eval()  # e.g. to "freeze" dropout while training
    return ex.good_step(model, batch, optimizer, loss_fn)


class TrainStepInEvalMode(Check):
    """Fail when the user's training code runs the model with model.training False.

    ## What it measures
    Runs the user's step (and, with `train_epoch` and `evaluate`, an evaluation in between) and
    records at each training forward whether the model and its dropout/BatchNorm layers are in
    training mode.

    ## Why it matters
    Training in eval mode disables dropout and freezes the BatchNorm statistics: regularization
    silently disappears and the normalization uses stale statistics.

    ## Thresholds
    Fails when the model is in eval mode and has mode-dependent layers; warns when only some layers
    are in eval mode (frozen BatchNorm on purpose is common). It warns; `--train-sanity-strict`
    makes the warning fail the run. Turn the check off with `--train-sanity-ignore TRN304` (or
    `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs the user's own step. A model without dropout or BatchNorm in eval mode only warns, since
    the mode changes nothing there.

    ## Example
    ```python
    model.eval()
    for x, y in loader:
        step(model, (x, y), optimizer, loss_fn)
    ```
    """

    CODE = "TRN304"
    NEEDS_STEP = True
    PASSING = (lambda: _modes.setup(),
               lambda: _modes.setup(step=None, train_epoch=_modes.epoch_with_train, evaluate=_modes.eval_no_restore))
    FAILING = (lambda: _modes.setup(step=_step_in_eval),
               lambda: _modes.setup(step=None, train_epoch=_modes.epoch_without_train, evaluate=_modes.eval_no_restore))

    def run(self, h: Harness) -> CheckResult:
        if h.training.train_epoch is not None and h.training.evaluate is not None:
            # The epoch function runs after an evaluation in real loops: it must set train mode itself.
            with h.session() as s:
                s.train(STEPS)
                s.evaluate()
                s.train(STEPS)
                forwards = [f for f in s.trace.forwards if f.phase == "step" and f.grad_enabled]
                has_mode_layers = bool(s.trace.mode_modules)
        else:
            rec = h.record(STEPS)
            forwards = [f for f in rec.forwards if f.phase == "step" and f.grad_enabled]
            has_mode_layers = rec.mode_layers
        if not forwards:
            return self.skipped("the training step never called the model with gradients enabled")
        in_eval = [f for f in forwards if not f.root_training]
        if in_eval and has_mode_layers:
            after_eval = " after evaluate()" if h.training.train_epoch is not None and h.training.evaluate else ""
            return self.failed(
                f"{len(in_eval)} of {len(forwards)} training forward pass(es){after_eval} ran with model.training "
                f"False, so {len(in_eval[0].eval_modules)} dropout/BatchNorm layer(s) "
                f"(first `{in_eval[0].eval_modules[0]}`) "
                "behaved as in evaluation; call `model.train()` before training",
                forwards=len(forwards), forwards_in_eval=len(in_eval))
        partly = [f for f in forwards if f.eval_modules and f.root_training]
        if in_eval or partly:
            what = ("model.training was False (harmless for a model without dropout/BatchNorm)" if in_eval
                    else f"layer(s) {', '.join(partly[0].eval_modules[:3])} were in eval mode while the model trained")
            return self.warned(f"during the training step {what}; call `model.train()` before training "
                               "unless this is deliberate (e.g. frozen BatchNorm statistics)",
                               forwards=len(forwards), forwards_in_eval=len(in_eval or partly))
        return self.passed(f"{len(forwards)} training forward pass(es) ran in train mode")

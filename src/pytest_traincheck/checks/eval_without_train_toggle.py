"""TRN301: evaluate() leaves the model in eval mode (CHECKS.md D6 b)."""

from __future__ import annotations

from typing import Any

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness import mode_examples as _modes
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness


class EvalWithoutTrainToggle(Check):
    """Fail when mode-dependent layers stay in eval mode after the user's evaluate().

    ## What it measures
    Runs the user's `evaluate(model, loader)` and then a training step, and checks whether the
    mode-dependent layers (dropout, BatchNorm) are back in training mode when training resumes.

    ## Why it matters
    `model.eval()` in an evaluation function with no `model.train()` after it leaves dropout off and
    BatchNorm statistics frozen for the rest of training: the model trains differently from what the
    code says, usually worse.

    ## Thresholds
    Fails when a mode-dependent layer stays in eval mode into training. Fixed; turn the check off
    with `--train-sanity-ignore TRN301` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs `evaluate=` on the `Training`; skipped otherwise. Declared training code (`step` or
    `train_epoch`) that calls `model.train()` before its forward pass passes, as it should. With
    only `step=` declared, an epoch loop that switches back at its top is not seen: declare that
    loop as `train_epoch=` (the failure message says so). Models without dropout or BatchNorm are
    not affected by the mode and only warn.

    ## Example
    ```python
    def evaluate(model, loader):
        model.eval()
        with torch.no_grad():
            return sum(model(x).argmax(1).eq(y).sum().item() for x, y in loader)
    ```
    """

    CODE = "TRN301"
    NEEDS_EVALUATE = True
    PASSING = (lambda: _modes.setup(), lambda: _modes.setup(evaluate=_modes.eval_restoring_mode),
               # evaluate() leaves eval mode, but the training code switches back before its forward pass.
               lambda: _modes.setup(step=None, train_epoch=_modes.epoch_with_train, evaluate=_modes.eval_no_restore),
               lambda: _modes.setup(step=_modes.step_with_train, evaluate=_modes.eval_no_restore))
    FAILING = (lambda: _modes.setup(evaluate=_modes.eval_no_restore),
               lambda: _modes.setup(step=None, train_epoch=_modes.epoch_without_train,
                                    evaluate=_modes.eval_no_restore),
               # A model without dropout/BatchNorm left in eval mode is a latent bug only.
               (lambda: _modes.setup(model=ex.MLP, evaluate=_modes.eval_no_restore), Verdict.WARN))

    def run(self, h: Harness) -> CheckResult:
        with h.session() as s:
            before = {name for name, m in s.trace.mode_modules if m.training}
            s.evaluate()
            root_training = s.model.training
            left = sorted(name for name, m in s.trace.mode_modules if name in before and not m.training)
            # What matters is the mode the training code runs in next: a loop that calls
            # `model.train()` at its top makes an evaluate() that leaves eval mode harmless.
            restored = self._training_restores(h, s) if (left or not root_training) else None
        if restored:
            return self.passed(f"evaluate() leaves model.training False, but the declared training code calls "
                               f"`model.train()` before its forward pass ({restored} training forward pass(es) "
                               "in train mode)", root_training=root_training, train_forwards=restored)
        hint = ("; if your epoch loop calls `model.train()` at its top, declare it as `train_epoch=` so traincheck "
                "runs it after evaluate()" if h.training.step is not None else "")
        if left:
            shown = ", ".join(f"`{n}`" for n in left[:4]) + (" ..." if len(left) > 4 else "")
            return self.failed(
                f"after evaluate(), model.training is {root_training} and {len(left)} dropout/BatchNorm layer(s) "
                f"({shown}) stay in eval mode, and {self._next(h)} does not switch back, so training continues "
                "without dropout and BatchNorm updates; call `model.train()` at the end of evaluate() "
                f"(or restore the previous mode){hint}",
                root_training=root_training, layers_left_in_eval=len(left), first_layer=left[0])
        if not root_training:
            return self.warned(
                "after evaluate(), model.training is False; this model has 0 dropout/BatchNorm layers so training is "
                "unaffected today, but any such layer added later would be: call `model.train()` after evaluating",
                root_training=False)
        return self.passed("evaluate() restored training mode", root_training=True)

    @staticmethod
    def _next(h: Harness) -> str:
        if h.training.train_epoch is not None:
            return "the declared `train_epoch`"
        return "the declared `step`" if h.training.step is not None else "the training step"

    @staticmethod
    def _training_restores(h: Harness, s: Any) -> int:
        """Run the user's training code once after evaluate(); return its train-mode forwards (0: not all)."""
        if not h.has_user_step:
            return 0  # the textbook step never toggles modes: nothing of the user's restores it
        seen = len(s.trace.forwards)
        s.train(1)
        forwards = [f for f in s.trace.forwards[seen:] if f.phase == "step" and f.grad_enabled]
        if forwards and all(f.root_training and not f.eval_modules for f in forwards):
            return len(forwards)
        return 0

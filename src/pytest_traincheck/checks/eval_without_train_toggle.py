"""TRN301: evaluate() leaves the model in eval mode (CHECKS.md D6 b)."""

from __future__ import annotations

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness import mode_examples as _modes
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness


class EvalWithoutTrainToggle(Check):
    """Fail when mode-dependent layers stay in eval mode after the user's evaluate()."""

    CODE = "TRN301"
    NEEDS_EVALUATE = True
    PASSING = (lambda: _modes.setup(), lambda: _modes.setup(evaluate=_modes.eval_restoring_mode))
    FAILING = (lambda: _modes.setup(evaluate=_modes.eval_no_restore),
               # A model without dropout/BatchNorm left in eval mode is a latent bug only.
               (lambda: _modes.setup(model=ex.MLP, evaluate=_modes.eval_no_restore), Verdict.WARN))

    def run(self, h: Harness) -> CheckResult:
        with h.session() as s:
            before = {name for name, m in s.trace.mode_modules if m.training}
            s.evaluate()
            root_training = s.model.training
            left = sorted(name for name, m in s.trace.mode_modules if name in before and not m.training)
        if left:
            shown = ", ".join(f"`{n}`" for n in left[:4]) + (" ..." if len(left) > 4 else "")
            return self.failed(
                f"after evaluate(), model.training is {root_training} and {len(left)} dropout/BatchNorm layer(s) "
                f"({shown}) stay in eval mode, so training continues without dropout and BatchNorm updates; "
                "call `model.train()` at the end of evaluate() (or restore the previous mode)",
                root_training=root_training, layers_left_in_eval=len(left), first_layer=left[0])
        if not root_training:
            return self.warned(
                "after evaluate(), model.training is False; this model has 0 dropout/BatchNorm layers so training is "
                "unaffected today, but any such layer added later would be: call `model.train()` after evaluating",
                root_training=False)
        return self.passed("evaluate() restored training mode", root_training=True)

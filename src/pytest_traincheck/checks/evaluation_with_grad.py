"""TRN303: gradient tracking enabled while evaluate() runs."""

from __future__ import annotations

from pytest_traincheck.harness import mode_examples as _modes
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness


class EvaluationWithGrad(Check):
    """Warn when evaluate() runs forward passes with grad mode on (wasted memory and time)."""

    CODE = "TRN303"
    NEEDS_EVALUATE = True
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: _modes.setup(), lambda: _modes.setup(evaluate=_modes.eval_restoring_mode))
    FAILING = (lambda: _modes.setup(evaluate=_modes.eval_with_grad),)

    def run(self, h: Harness) -> CheckResult:
        with h.session() as s:
            s.evaluate()
            forwards = [f for f in s.trace.forwards if f.phase == "evaluate"]
        if not forwards:
            return self.skipped("evaluate() never called the model")
        bad = [f for f in forwards if f.grad_enabled]
        if bad:
            return self.warned(
                f"evaluate() ran {len(bad)} of {len(forwards)} forward pass(es) with gradient tracking on, "
                "building graphs nobody uses; wrap the evaluation loop in `with torch.no_grad():` "
                "(or `torch.inference_mode()`)", forwards=len(forwards), forwards_with_grad=len(bad))
        return self.passed(f"evaluate() ran {len(forwards)} forward pass(es) without gradient tracking")

"""TRN303: gradient tracking enabled while evaluate() runs."""

from __future__ import annotations

from pytest_traincheck.harness import mode_examples as _modes
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness


class EvaluationWithGrad(Check):
    """Warn when evaluate() runs forward passes with grad mode on (wasted memory and time).

    ## What it measures
    Runs the user's `evaluate(model, loader)` and records whether gradient tracking is on at each
    forward pass of the model.

    ## Why it matters
    Evaluating with gradients on builds a graph for every batch that nobody uses: memory grows with
    the batch size and evaluation is slower, sometimes enough to run out of GPU memory.

    ## Thresholds
    Warns when any evaluation forward runs with gradients enabled. It warns; `--train-sanity-strict`
    makes the warning fail the run. Fixed; turn the check off with `--train-sanity-ignore TRN303`
    (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs `evaluate=`; skipped otherwise. Evaluation that needs gradients on purpose (adversarial
    examples, saliency maps) is flagged: ignore the check there.

    ## Example
    ```python
    def evaluate(model, loader):
        model.eval()
        return [model(x) for x, _ in loader]   # no torch.no_grad()
    ```
    """

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

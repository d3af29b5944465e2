"""TRN302: dropout/BatchNorm in training mode while evaluate() runs (CHECKS.md D6 a)."""

from __future__ import annotations

from pytest_traincheck.harness import mode_examples as _modes
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness


class EvaluationInTrainMode(Check):
    """Fail when evaluate() runs the model with dropout/BatchNorm in training mode.

    ## What it measures
    Runs the user's `evaluate(model, loader)` and records, at each forward pass, whether dropout or
    BatchNorm layers are in training mode.

    ## Why it matters
    Evaluating in training mode makes results random (dropout) and lets the evaluation data change
    the BatchNorm running statistics: reported accuracy is wrong and the model itself changes.

    ## Thresholds
    Any evaluation forward with a mode-dependent layer in training mode fails. Fixed; Turn the check
    off with `--train-sanity-ignore TRN302` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs `evaluate=`; skipped otherwise. Layers that are frozen on purpose and kept in a fixed mode
    are judged like any other.

    ## Example
    ```python
    def evaluate(model, loader):   # no model.eval()
        with torch.no_grad():
            return [model(x) for x, _ in loader]
    ```
    """

    CODE = "TRN302"
    NEEDS_EVALUATE = True
    PASSING = (lambda: _modes.setup(), lambda: _modes.setup(evaluate=_modes.eval_restoring_mode))
    FAILING = (lambda: _modes.setup(evaluate=_modes.eval_in_train_mode),)

    def run(self, h: Harness) -> CheckResult:
        with h.session() as s:
            s.evaluate()
            forwards = [f for f in s.trace.forwards if f.phase == "evaluate"]
            has_mode_layers = bool(s.trace.mode_modules)
        if not forwards:
            return self.skipped("evaluate() never called the model")
        if not has_mode_layers:
            return self.passed("the model has no dropout/BatchNorm layer, so its mode does not change evaluation")
        bad = [f for f in forwards if f.train_modules]
        if bad:
            layers = bad[0].train_modules
            shown = ", ".join(f"`{n}`" for n in layers[:4]) + (" ..." if len(layers) > 4 else "")
            return self.failed(
                f"evaluate() ran {len(bad)} of {len(forwards)} forward pass(es) with {len(layers)} dropout/BatchNorm "
                f"layer(s) in training mode ({shown}): dropout stays on and BatchNorm uses and updates batch "
                "statistics; call `model.eval()` before evaluating",
                forwards=len(forwards), forwards_in_train_mode=len(bad), first_layer=layers[0])
        return self.passed(f"evaluate() ran {len(forwards)} forward pass(es) in eval mode", forwards=len(forwards))

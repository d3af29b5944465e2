"""TRN603: NaN/Inf in the loss, outputs, gradients or parameters, with the first module (D11)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness

MAX_STEPS = 10


class _Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # NaN for the negative inputs a Linear layer produces


def _log_model() -> nn.Module:
    return nn.Sequential(nn.Linear(ex.FEATURES, 16), _Log(), nn.Linear(16, ex.CLASSES))


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    return True


class NonFiniteValues(Check):
    """Fail on the first NaN/Inf, naming the module, loss, gradient or parameter that produced it.

    ## What it measures
    Runs up to 10 steps and checks the loss, the model outputs, the gradients and the parameters for
    NaN/Inf; at the first one, it names the first module whose output became non-finite (forward
    hooks), the loss, or the parameter.

    ## Why it matters
    One NaN spreads to every weight within a step; afterwards the loss is NaN for the rest of the
    run. Finding where it started (a log of zero, a division, a too large learning rate) is the hard
    part.

    ## Thresholds
    Any non-finite value fails. Fixed; turn the check off with `--train-sanity-ignore TRN603` (or
    `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Mixed-precision runs whose scaler skips steps with Inf gradients on purpose are judged by what
    reaches the parameters; non-finite values that appear only after more than 10 steps are not
    seen.

    ## Example
    ```python
    out = torch.log(model(x))   # log(0) for a ReLU output
    ```
    """

    CODE = "TRN603"
    PASSING = (lambda: ex.setup(),)
    FAILING = (lambda: ex.setup(model=_log_model),
               lambda: ex.setup(data=[(ex.blobs()[0] * float("nan"), ex.blobs()[1])]))

    def run(self, h: Harness) -> CheckResult:
        try:
            x = [t for t in tb.leaves(h.inputs()) if t.is_floating_point()]
        except tb.MissingField:
            x = []  # the inputs are not found: the training run below still watches every module
        if not _finite(x):
            bad = sum(int((~torch.isfinite(t)).sum()) for t in x)
            return self.failed(f"the fixed batch's inputs already contain {bad} NaN/Inf values: fix the data "
                               "pipeline first", nonfinite_inputs=bad)
        steps = min(h.training.overfit_steps, MAX_STEPS)
        rec = h.record(steps)  # loss, gradient norms and parameter finiteness of every step, fused
        bad_step = rec.nonfinite_step(steps)
        if bad_step is None:
            n = min(steps, len(rec.losses))
            return self.passed(f"loss, gradients and parameters stayed finite for {n} steps",
                               curve=rec.losses[:n], steps=n)
        # Something turned non-finite: replay the same steps from the same seed, watching every module.
        torch.manual_seed(h.seed)
        with h.session() as s:
            first: dict[str, Any] = {}
            handles = [m.register_forward_hook(self._watch(name or "<model>", s, first))
                       for name, m in s.model.named_modules()]
            try:
                losses = s.train(bad_step, stop=lambda ls: bool(first))
            finally:
                for handle in handles:
                    handle.remove()
            return self._verdict(s, rec, losses, first)

    @staticmethod
    def _watch(name: str, s: Any, first: dict[str, Any]) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if "module" not in first and s.trace.phase == "step" and not _finite(out) and _finite(args):
                first.update(module=name, kind=type(module).__name__, step=len(s.trace.steps) + 1)
        return hook

    def _verdict(self, s: Any, rec: Any, losses: list[float], first: dict[str, Any]) -> CheckResult:
        n = len(losses)
        if first:
            return self.failed(
                f"at step {first['step']}, module `{first['module']}` ({first['kind']}) produced NaN/Inf from "
                "finite inputs; guard its log/div/sqrt (or clamp its input)",
                curve=losses, module=first["module"], module_type=first["kind"], step=first["step"])
        bad_loss = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if bad_loss is not None:
            return self.failed(f"at step {bad_loss + 1} the loss is {losses[bad_loss]} while every module output "
                               "is finite: the loss computation produces it (log of 0? division by 0?)",
                               curve=losses, step=bad_loss + 1)
        for step in s.trace.steps:
            if step.grads_nonfinite:
                return self.failed(f"at step {step.index + 1}, the gradient of `{step.grads_nonfinite[0]}` is not "
                                   f"finite ({len(step.grads_nonfinite)} parameters affected) although the loss is "
                                   "finite", curve=losses, step=step.index + 1, param=step.grads_nonfinite[0])
        bad_params = [n for n, p in s.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad_params:
            return self.failed(f"after {n} steps, `{bad_params[0]}` holds NaN/Inf: the update diverged; lower the "
                               "learning rate or clip gradients", curve=losses, param=bad_params[0], steps=n)
        # The replay stayed finite (a non-deterministic kernel?): report what the shared run saw.
        step = rec.nonfinite_step(MAX_STEPS) or n
        return self.failed(f"at step {step} of the shared training run the loss, a gradient or a parameter became "
                           "NaN/Inf (a replay from the same seed did not reproduce it, so the first module is "
                           "unknown); lower the learning rate, clip gradients or guard log/div/sqrt",
                           curve=rec.losses[:step], step=step)

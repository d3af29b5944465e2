"""TRN602: trainable parameters without gradient, not updated, or not in the optimizer (D8-D10)."""

from __future__ import annotations

from typing import Any

import torch

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness

STEPS = 3


def _frozen_first_layer() -> Any:
    model = ex.MLP()
    model.fc1.requires_grad_(False)
    return model


def _head_only_optimizer(params: Any) -> Any:
    params = list(params)
    return torch.optim.Adam(params[-2:], lr=0.05)  # forgets fc1


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")


class ParametersNotUpdated(Check):
    """Fail when a trainable parameter is missing from the optimizer, gets no gradient, or never moves.

    ## What it measures
    Compares the trainable parameters with the optimizer's `param_groups`, then runs the user's step
    3 times and records, per parameter, whether it received a gradient and whether its value
    changed.

    ## Why it matters
    A layer left out of the optimizer, unused in `forward`, or detached from the loss never trains;
    the model still trains around it, so nothing crashes.

    ## Thresholds
    Fails on any trainable parameter missing from the optimizer, without a gradient in every step,
    or with non-zero gradients but a value that never changes. Frozen parameters
    (`requires_grad=False`) are expected to stay. Fixed; turn the check off with
    `--train-sanity-ignore TRN602` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Parameters used only in some steps (mixture of experts, stochastic depth) can be reported as
    getting no gradient over 3 steps.

    ## Example
    ```python
    optimizer = torch.optim.Adam(model.encoder.parameters())   # the head is never trained
    ```
    """

    CODE = "TRN602"
    PASSING = (lambda: ex.setup(), lambda: ex.setup(model=_frozen_first_layer), lambda: ex.setup(step=None))
    FAILING = (lambda: ex.setup(model=lambda: ex.MLP(unused=True)),
               lambda: ex.setup(model=lambda: ex.MLP(hidden=8), optimizer=_head_only_optimizer))

    def run(self, h: Harness) -> CheckResult:
        shared = h.record(raise_error=False)  # which parameters the optimizer holds is known before any step
        trainable = shared.trainable
        in_opt = {n for part in shared.by_optimizer().values() for n in part.optimized}
        missing = [n for n in trainable if n not in in_opt]
        if missing:
            return self.failed(
                f"{len(missing)} of {len(trainable)} trainable parameters are not in the optimizer "
                f"({_names(missing)}), so they are never trained; build the optimizer from "
                "`model.parameters()` (or freeze them with `requires_grad_(False)`)",
                missing=len(missing), trainable=len(trainable), first=missing[0])
        shared.need(STEPS)
        return self.per_optimizer(shared.by_optimizer(),
                                  lambda trace: self._judge(trace, [n for n in trainable if n in set(trace.optimized)]))

    def _judge(self, trace: Any, trainable: list[str]) -> CheckResult:
        if not trace.steps:
            return self.failed(f"the training step never called `step()` on the optimizer in {len(trace.losses)} calls, "
                               "so no parameter was updated", steps=0)
        no_grad = [n for n in trainable if trace.accumulations[n] == 0]
        if no_grad:
            return self.failed(
                f"{len(no_grad)} of {len(trainable)} trainable parameters received no gradient in {len(trace.steps)} "
                f"steps ({_names(no_grad)}): they are not used in forward or their output is detached; "
                "use them, or freeze them with `requires_grad_(False)`",
                no_grad=len(no_grad), trainable=len(trainable), first=no_grad[0])
        stuck = self._never_moved(trace, trainable)
        if stuck:
            return self.failed(
                f"{len(stuck)} parameters had a non-zero gradient at every step but their values never changed in "
                f"{sum(bool(r.update_max) for r in trace.steps)} steps ({_names(stuck)}): check the learning rate of "
                "their parameter group",
                unchanged=len(stuck), first=stuck[0])
        zero = [n for n in trainable if n not in trace.nonzero]
        if zero:
            return self.warned(f"{len(zero)} parameters only ever received all-zero gradients in {len(trace.steps)} "
                               f"steps ({_names(zero)}): dead units or a zero-initialized path", zero_grad=len(zero))
        return self.passed(f"all {len(trainable)} trainable parameters got gradients and were updated",
                           trainable=len(trainable), steps=len(trace.steps))

    @staticmethod
    def _never_moved(trace: Any, trainable: list[str]) -> list[str]:
        stuck = []
        tracked = [r for r in trace.steps if r.update_max]  # the steps whose updates were measured
        for name in trainable:
            live = [r for r in tracked if name not in r.grads_none + r.grads_zero + r.grads_nonfinite]
            if live and all(name in r.unchanged for r in live):
                stuck.append(name)
        return stuck

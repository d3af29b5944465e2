"""TRN607: the model trains no better on the real inputs than on zeroed inputs (CHECKS.md D15)."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.checks.cannot_overfit_single_batch import own_objectives
from pytest_traincheck.harness.core import Harness, MissingField
from pytest_traincheck.harness.record import Record

MARGIN = 0.9  # the real-input loss must end at least 10% below the zero-input loss
TAIL = 3  # the zero-input loss is the mean of its last steps, robust to one noisy step


class InputDropoutTypo(ex.MLP):
    """The example MLP with `nn.Dropout(1.0)` on its inputs (meant: 0.1): training never sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.input_drop = nn.Dropout(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.input_drop(x))


def _zeros_into_model(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    # A step that feeds the wrong tensor (a zero placeholder) to the model.
    x, y = batch
    return ex.good_step(model, (torch.zeros_like(x), y), optimizer, loss_fn)


class LossIgnoresInputs(Check):
    """Warn when training on the real inputs gets the loss no lower than training on zeroed inputs.

    ## What it measures
    Trains on the fixed batch with the real inputs and, separately, with the inputs replaced by
    zeros (same targets), and compares the final losses (the zero-input loss is the mean of its last
    3 steps). Stochastic: retried with 2 more seeds.

    ## Why it matters
    If zeroed inputs train as well as real ones, the model does not use its inputs: they are
    detached, overwritten, or the targets leak into the model another way.

    ## Thresholds
    Warns unless the real-input loss ends at least 10% below the zero-input loss. It warns;
    `--train-sanity-strict` makes the warning fail the run. Fixed; turn the check off with
    `--train-sanity-ignore TRN607` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Several optimizers are judged like TRN601: when they minimize one loss together; a GAN (several
    objectives) is skipped.
    Tasks whose targets are nearly constant (the batch's best constant prediction is already close
    to perfect) may warn.

    ## Example
    ```python
    def forward(self, x):
        x = torch.zeros_like(x)   # a typo: the input never reaches the layers
        return self.fc(x)
    ```
    """

    CODE = "TRN607"
    STOCHASTIC = True
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(), lambda: ex.setup(step=None),
               lambda: ex.setup(model=lambda: ex.MLP(dropout=0.2, batchnorm=True)), lambda: ex.two_models())
    FAILING = (lambda: ex.setup(model=InputDropoutTypo), lambda: ex.setup(step=_zeros_into_model),
               lambda: ex.two_models(InputDropoutTypo))

    def run(self, h: Harness) -> CheckResult:
        steps = max(h.training.overfit_steps // 2, TAIL)
        rec = h.record(1)  # the real-input run: the shared run, from the same initial weights
        reason = own_objectives(h, rec)
        if reason is not None:
            return self.skipped(reason)
        real_losses = rec.losses[:steps]
        best = min(real_losses)
        floor = constant_floor(rec)
        facts: dict[str, Any] = dict(real_loss=best, steps=len(real_losses), initial_loss=real_losses[0])
        if floor is not None and math.isfinite(best) and best <= MARGIN * floor:
            # Zeroed inputs are the same for every sample, so such a run predicts one constant: it
            # cannot get below the best constant's loss, which the real inputs already beat.
            return self.passed(f"real inputs reached loss {best:.4g} in {len(real_losses)} steps; a model that "
                               f"ignores its inputs cannot get below {floor:.4g} on this batch (the best constant "
                               "prediction), so no zeroed-input run was needed",
                               constant_floor=floor, ratio=best / floor, **facts)
        return self._compare(h, steps, real_losses, best, floor, facts)

    def _compare(self, h: Harness, steps: int, real_losses: list[float], best: float, floor: Optional[float],
                 facts: dict[str, Any]) -> CheckResult:
        zero = _with_zero_inputs(h)
        zero.clock.stage = f"the zeroed-input training run (up to {steps} steps)"
        torch.manual_seed(h.seed)  # both runs start from the same initial weights

        def decided(losses: list[float]) -> bool:
            if len(losses) < TAIL:
                return False
            tail = sum(losses[-TAIL:]) / TAIL
            fitted = tail <= 0.1 * abs(losses[0]) or tail <= 1e-6  # fits the targets without inputs: a SKIP
            # Reached what the real inputs reached; with a floor above the SKIP line the end cannot change that.
            reached = floor is not None and floor > 0.1 * abs(losses[0]) and MARGIN * tail <= best
            return not math.isfinite(tail) or fitted or reached

        with zero.session() as s:
            zero_losses = s.train(steps, stop=decided)
        baseline = sum(zero_losses[-TAIL:]) / len(zero_losses[-TAIL:])
        if not math.isfinite(baseline):
            return self.skipped(f"the zero-input run's loss became {baseline} (see TRN603); nothing to compare")
        if baseline <= 0.1 * abs(zero_losses[0]) or baseline <= 1e-6:
            return self.skipped(f"the batch's targets are fit without any input (loss {zero_losses[0]:.4g} -> "
                                f"{baseline:.4g} on zeroed inputs), e.g. a single class: the comparison says nothing")
        facts.update(zero_input_loss=baseline, zero_input_steps=len(zero_losses), ratio=best / baseline)
        if not best <= MARGIN * baseline:
            return self.warned(
                f"after {len(real_losses)} steps on one batch, the best loss on the real inputs ({best:.4g}) is not "
                f"10% below the loss on zeroed inputs ({baseline:.4g} after {len(zero_losses)} steps; ratio "
                f"{best / baseline:.2f}, need <= {MARGIN:g}): the model does not use its inputs; check that they "
                "reach the model (input dropout, masking, a detached or replaced tensor) and that the step feeds "
                "the batch's inputs", curve=real_losses, **facts)
        return self.passed(f"real inputs reached loss {best:.4g} in {len(real_losses)} steps vs {baseline:.4g} "
                           f"on zeroed inputs after {len(zero_losses)}", **facts)


def constant_floor(rec: Record) -> Optional[float]:
    """Return the lowest loss any prediction that is the same for every sample gets on the batch, if known.

    Known when the step's loss is exactly one call of cross_entropy (class indices or
    probabilities), binary cross entropy (with logits) or MSE, with mean reduction, no
    class weights and no label smoothing: then the floor is the entropy of the batch's
    labels per position (the variance of the targets for MSE).
    """
    calls = rec.first_step_calls
    if len(calls) != 1 or len([c for c in rec.loss_calls if c.phase == "step" and c.step == 0]) != 1:
        return None
    call = calls[0]
    if (call.weighted or call.value is None or call.target is None or call.input is None
            or not math.isfinite(call.value) or not rec.losses
            or abs(call.value - rec.losses[0]) > 1e-5 * max(1.0, abs(call.value))):
        return None  # the step's loss is more than this one call (scaled, summed with other terms)
    options = call.options
    if options.get("reduction", "mean") != "mean" or options.get("label_smoothing", 0.0) or \
            options.get("size_average") is not None or options.get("reduce") is not None or "positional" in options:
        return None
    y, x = call.target.detach().double(), call.input.detach()
    if call.kind == "cross_entropy":
        return _ce_floor(call.target, x, options.get("ignore_index", -100))
    if call.kind in ("binary_cross_entropy", "binary_cross_entropy_with_logits") and y.shape == x.shape:
        if bool(((y < 0) | (y > 1)).any()):
            return None
        p = y.mean(0)
        return float(_entropy(torch.stack([p, 1 - p])).mean())
    if call.kind == "mse_loss" and y.shape == x.shape:
        return float(((y - y.mean(0)) ** 2).mean())
    return None


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy over dim 0 of probabilities ``p`` (0 log 0 = 0)."""
    return -(torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))).sum(0)


def _ce_floor(target: torch.Tensor, x: torch.Tensor, ignore: int) -> Optional[float]:
    if x.ndim < 2 or x.shape[0] != target.shape[0]:
        return None
    classes = x.shape[1]
    if target.is_floating_point():  # class probabilities of the input's shape
        if target.shape != x.shape:
            return None
        q = target.double().transpose(0, 1).reshape(classes, x.shape[0], -1)
        if bool((q < 0).any()) or not torch.allclose(q.sum(0), torch.ones_like(q[0]), atol=1e-4):
            return None
        return float(_entropy(q.mean(1)).mean())
    y = target.reshape(target.shape[0], -1).long()  # (N, positions)
    keep = y != ignore
    if not bool(keep.any()) or bool(((y[keep] < 0) | (y[keep] >= classes)).any()):
        return None
    counts = torch.zeros(classes, y.shape[1], dtype=torch.float64)
    counts.scatter_add_(0, y.clamp(0, classes - 1) * keep, keep.double())
    per_position = counts.sum(0)
    used = per_position > 0
    p = counts[:, used] / per_position[used]
    return float((_entropy(p) * per_position[used]).sum() / per_position.sum())


def _with_zero_inputs(h: Harness) -> Harness:
    """Return a harness over the same setup whose fixed batch has all-zero inputs (same targets)."""
    data = h.data
    batch = data.batch
    try:
        keep = data.part("targets")
    except MissingField:
        keep = None
    zeroed, count = tb.zero_part(batch, data.part("inputs"), keep)
    if not count:
        raise MissingField("the inputs of the batch hold no tensor to zero; declare `Training(inputs=...)`")
    zero = Harness(data.with_batch(zeroed), seed=h.seed, device=str(h.device))
    zero.clock = h.clock  # one time budget for the whole check
    return zero

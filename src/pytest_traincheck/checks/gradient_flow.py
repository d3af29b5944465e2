"""TRN605: per-layer gradients vanish toward the input or explode (CHECKS.md D12)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness
from pytest_traincheck.harness.record import Record

STEPS = 5
# Per-layer gradient size is the RMS of the weight gradient (norm / sqrt(numel)), so wide
# and narrow layers compare fairly. Measured first/last RMS ratios of healthy nets over 5
# Adam/SGD steps: reference MNIST MLP 0.17-0.28, a 2-conv MNIST CNN 0.75-1.02, the example
# MLP 0.38-0.55, a 10-layer ReLU MLP 0.03-0.29, a 10-layer tanh MLP at 4x init 0.57-6.4.
VANISH_RATIO, VANISH_FIRST = 1e-3, 1e-4  # AUTOTRAINER beta1, beta2 (a 10-layer sigmoid MLP: 3e-8, 3e-9)
VANISH_MEAN = 1e-7  # mean |g| over all parameters (SMDebug / DeepDiagnosis)
EXPLODE_RATIO = 70.0  # AUTOTRAINER beta3 (a 20-layer tanh MLP at 5x init: 153-1.1e4)


def deep_sigmoid() -> nn.Module:
    """Return a 10-layer sigmoid MLP: each sigmoid shrinks the backward signal by >= 4x."""
    layers: list[nn.Module] = [nn.Linear(ex.FEATURES, 32), nn.Sigmoid()]
    for _ in range(8):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(32, ex.CLASSES))


def chaotic_tanh() -> nn.Module:
    """Return a 20-layer tanh MLP initialized with std 5/sqrt(fan_in): backward signals grow per layer."""
    layers: list[nn.Module] = [nn.Linear(ex.FEATURES, 32), nn.Tanh()]
    for _ in range(20):
        layers += [nn.Linear(32, 32), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(32, ex.CLASSES))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=5.0 / math.sqrt(m.in_features))
            nn.init.zeros_(m.bias)
    return model


def zero_head() -> nn.Module:
    """Return the example MLP with a zero-initialized head (first-layer gradients are 0 at step 1 only)."""
    model = ex.MLP()
    nn.init.zeros_(model.fc2.weight)
    return model


def _sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=1e-3)


def _layers(rec: Record) -> list[tuple[str, int]]:
    """Return the weight matrices/kernels (name, size) in definition order; embeddings are lookups, not layers."""
    return list(rec.weights)


class GradientFlow(Check):
    """Warn when first-layer gradients vanish relative to the last layer's, or explode.

    ## What it measures
    Runs 5 steps and measures, per layer (weight matrices and kernels, embeddings excluded), the RMS
    of the weight gradient; compares the first layer with the last and tracks the mean absolute
    gradient over all parameters.

    ## Why it matters
    Vanishing gradients leave the first layers untrained (deep sigmoid/tanh stacks), exploding ones
    make updates erratic; both train slowly or not at all while the loss still moves a little.

    ## Thresholds
    Warns for vanishing when first/last < 1e-3 and the first layer's RMS < 1e-4, or the mean |g| <
    1e-7 (AUTOTRAINER, SMDebug); for exploding when first/last > 70. It warns;
    `--train-sanity-strict` makes the warning fail the run. Fixed; turn the check off with
    `--train-sanity-ignore TRN605` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Architectures whose first layer is meant to learn slowly (frozen stems, very deep residual nets
    at initialization) may warn.

    ## Example
    ```python
    nn.Sequential(*[nn.Sequential(nn.Linear(32, 32), nn.Sigmoid()) for _ in range(10)])
    ```
    """

    CODE = "TRN605"
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(), lambda: ex.setup(model=zero_head),
               lambda: ex.setup(model=lambda: ex.MLP(batchnorm=True, dropout=0.2)))
    FAILING = (lambda: ex.setup(model=deep_sigmoid), lambda: ex.setup(model=chaotic_tanh, optimizer=_sgd))

    def run(self, h: Harness) -> CheckResult:
        rec = h.record(STEPS)
        layers = _layers(rec)
        if len(layers) < 2:
            return self.skipped(f"the model has {len(layers)} trainable weight layer(s); gradient flow "
                                "compares the first and the last")
        # Per-step gradient norms come from the shared run's fused reductions: RMS = norm / sqrt(numel).
        records = [{n: r.grad_norms[n] / math.sqrt(max(size, 1)) for n, size in layers if n in r.grad_norms}
                   for r in rec.steps[:STEPS]]
        mean_abs = [r.grad_abs_mean or 0.0 for r in rec.steps[:STEPS]]
        order = [n for n, _ in layers]
        return self._verdict(records, mean_abs, order)

    def _verdict(self, records: list[dict[str, float]], mean_abs: list[float], order: list[str]) -> CheckResult:
        # Zero-initialized heads and residual branches give zero early-layer gradients at step 1 only.
        usable = [(r, m) for r, m in zip(records, mean_abs) if len(r) >= 2][1:] or \
            [(r, m) for r, m in zip(records, mean_abs) if len(r) >= 2]
        if not usable:
            return self.skipped("fewer than two weight layers received a gradient at any optimizer step")
        broken = next((i for i, (r, _) in enumerate(usable) if not all(math.isfinite(v) for v in r.values())), None)
        if broken is not None:  # nan ratios compare false with both thresholds: never let them read as a pass
            return self.skipped(f"gradients are not finite (nan/inf) at {len(usable) - broken} of the {len(usable)} "
                                "steps compared, so gradient flow cannot be judged; TRN601 finds where they "
                                "stop being finite")
        first, last = _ends(usable[-1][0], order)
        ratios = [r[_ends(r, order)[0]] / max(r[_ends(r, order)[1]], 1e-30) for r, _ in usable]
        last_record = usable[-1][0]
        facts: dict[str, Any] = dict(first_layer=first, last_layer=last, first_rms=last_record[first],
                                     last_rms=last_record[last], ratio=ratios[-1], steps=len(records),
                                     mean_abs_grad=usable[-1][1])
        norms = _describe(last_record, order)
        vanish = all(ratio < VANISH_RATIO and r[_ends(r, order)[0]] < VANISH_FIRST
                     for ratio, (r, _) in zip(ratios, usable))
        if vanish or all(m < VANISH_MEAN for _, m in usable):
            return self.warned(
                f"gradients vanish toward the input: at every one of {len(usable)} steps the first layer "
                f"`{first}` got gradient RMS {last_record[first]:.2e}, {ratios[-1]:.1e} of the last layer `{last}` "
                f"({last_record[last]:.2e}; thresholds ratio < {VANISH_RATIO:g} and first < {VANISH_FIRST:g}, "
                f"or mean |g| < {VANISH_MEAN:g}); per-layer RMS: {norms}. Use ReLU/GELU instead of "
                "sigmoid/tanh stacks, a normalization layer, residual connections or a better initialization",
                **facts)
        if all(ratio > EXPLODE_RATIO for ratio in ratios):
            return self.warned(
                f"gradients explode toward the input: at every one of {len(usable)} steps the first layer "
                f"`{first}` got {ratios[-1]:.3g}x the gradient RMS of the last layer `{last}` (threshold "
                f"{EXPLODE_RATIO:g}x); per-layer RMS: {norms}. Check the weight initialization scale "
                "(the Xavier/Kaiming defaults), add normalization, or clip gradients", **facts)
        return self.passed(f"first/last layer gradient RMS ratio {min(ratios):.3g}..{max(ratios):.3g} over "
                           f"{len(usable)} steps; per-layer RMS: {norms}", **facts)


def _ends(record: dict[str, float], order: list[str]) -> tuple[str, str]:
    present = [n for n in order if n in record]
    return present[0], present[-1]


def _describe(record: dict[str, float], order: list[str], limit: int = 6) -> str:
    items = [f"{n} {record[n]:.2e}" for n in order if n in record]
    if len(items) > limit:
        items = items[: limit // 2] + [f"... {len(items) - limit} more"] + items[-limit // 2:]
    return ", ".join(items)

"""TRN606: most units of a ReLU layer output zero for every sample of the batch (CHECKS.md D13)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness

DEAD = 0.7  # fraction of a layer's units <= 0 for every sample (AUTOTRAINER / DeepDiagnosis)
STEPS = 10  # training steps before the re-check: units dead at init may revive, live ones may die
RELU_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_})


class ReluRecorder(TorchFunctionMode):
    """Record, per ReLU call of one forward pass, which units were positive for some sample."""

    def __init__(self) -> None:
        super().__init__()
        self.current: Optional[str] = None  # set by an nn.ReLU pre-hook: its module name
        self.after: Optional[str] = None  # the last leaf module that ran: names a functional relu
        self.layers: list[tuple[str, float, int]] = []  # (label, dead fraction, units)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in RELU_FUNCTIONS and isinstance(out, torch.Tensor) and out.ndim >= 2 and out.shape[0] > 1:
            label = self.current or (f"relu after {self.after}" if self.after else f"relu call {len(self.layers) + 1}")
            self.current = None
            self.layers.append((label, *_dead_fraction(out.detach())))
        return out


def _dead_fraction(out: torch.Tensor) -> tuple[float, int]:
    # A unit is a channel of a conv feature map (N, C, H, W[, D]), else one output feature.
    units = out.transpose(0, 1).flatten(1).T if out.ndim >= 4 else out.flatten(1)
    alive = (units > 0).any(dim=0)
    return float(1.0 - alive.float().mean()), int(alive.numel())


def _measure(model: nn.Module, forward: Callable[[], Any]) -> list[tuple[str, float, int]]:
    """Run one no-grad train-mode forward; return each ReLU call's dead fraction."""
    recorder = ReluRecorder()
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            handles.append(m.register_forward_pre_hook(lambda mod, args, n=name: setattr(recorder, "current", n)))
        elif not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(lambda mod, args, out, n=name: setattr(recorder, "after", n)))
    modes = {m: m.training for m in model.modules()}
    model.train()  # the activations training sees
    try:
        with torch.no_grad(), recorder:
            forward()
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    return recorder.layers


def dead_bias() -> nn.Module:
    """Return the example MLP with the hidden bias initialized to -10: every unit starts dead."""
    model = ex.MLP()
    nn.init.constant_(model.fc1.bias, -10.0)
    return model


def _big_sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=20.0)


class DeadReluUnits(Check):
    """Warn when a ReLU layer has >= 70% units that are zero for every sample, after some training too.

    ## What it measures
    Records the output of every ReLU (module or functional form) on the fixed batch, at
    initialization and after 10 training steps, and counts the units that are zero for every sample.

    ## Why it matters
    A dead ReLU unit gets no gradient and never comes back; a layer that is mostly dead wastes its
    capacity. Large learning rates and negative bias initializations cause it.

    ## Thresholds
    Warns when at least 70% of a layer's units are dead after the training steps (AUTOTRAINER /
    DeepDiagnosis). It warns; `--train-sanity-strict` makes the warning fail the run. Fixed; turn
    the check off with `--train-sanity-ignore TRN606` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Sparse inputs can leave units inactive on one small batch while they fire on other data.

    ## Example
    ```python
    nn.init.constant_(model.fc1.bias, -10.0)
    ```
    """

    CODE = "TRN606"
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(), lambda: ex.setup(model=lambda: ex.MLP(batchnorm=True, dropout=0.2)),
               lambda: ex.setup(model=lambda: nn.Sequential(nn.Linear(ex.FEATURES, 32), nn.ReLU(),
                                                            nn.Linear(32, ex.CLASSES))))
    FAILING = (lambda: ex.setup(model=dead_bias), lambda: ex.setup(optimizer=_big_sgd))

    def run(self, h: Harness) -> CheckResult:
        x = h.input_tensor()
        if len(x) < 2:
            return self.skipped("the fixed batch has one sample; dead units are judged over several samples")
        with h.session() as s:
            start = _measure(s.model, lambda: h.forward(s.model))
            if not start:
                return self.skipped("the model calls no ReLU (nn.ReLU, F.relu, torch.relu) on batched tensors")
            s.train(STEPS)
            end = _measure(s.model, lambda: h.forward(s.model))
        return self._verdict(start, end, len(x))

    def _verdict(self, start: list[tuple[str, float, int]], end: list[tuple[str, float, int]],
                 samples: int) -> CheckResult:
        before = {label: dead for label, dead, _ in start}
        worst = max(end or start, key=lambda layer: layer[1])
        label, dead, units = worst
        facts: dict[str, Any] = dict(layer=label, dead_fraction=dead, units=units, samples=samples,
                                     dead_at_init=before.get(label), steps=STEPS, relu_layers=len(end))
        if dead >= DEAD:
            init = before.get(label)
            when = (f"already {init:.0%} at initialization" if init is not None and init >= DEAD
                    else f"{init:.0%} at initialization" if init is not None else "")
            return self.warned(
                f"after {STEPS} training steps, {dead:.0%} of the {units} units of ReLU layer `{label}` are <= 0 for "
                f"all {samples} samples of the batch ({when}; threshold {DEAD:.0%}): they pass no gradient and "
                "stop learning; lower the learning rate, check the initialization and biases, or use LeakyReLU/GELU",
                **facts)
        return self.passed(f"{len(end)} ReLU layer(s): at most {dead:.0%} of units dead over {samples} samples "
                           f"after {STEPS} steps (`{label}`)", **facts)

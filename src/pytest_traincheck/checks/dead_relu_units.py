"""TRN606: most units of a ReLU layer output zero for every sample of the batch (CHECKS.md D13)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.activations import measure_relus
from pytest_traincheck.harness.core import Harness, has_forward
from pytest_traincheck.harness.parts import part_calls
from pytest_traincheck.harness.record import WINDOW

DEAD = 0.7  # fraction of a layer's units <= 0 for every sample (AUTOTRAINER / DeepDiagnosis)
STEPS = WINDOW  # training steps before the re-check: units dead at init may revive, live ones may die
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

    A dict or list of models (a GAN), or a model without its own forward() (a LightningModule that
    calls `self.net` in training_step), is measured model by model (its direct submodules), each called with the arguments the
    user's step first gave it, at its initial weights and after the training steps.

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
                                                            nn.Linear(32, ex.CLASSES))),
               lambda: ex.two_models())
    FAILING = (lambda: ex.setup(model=dead_bias), lambda: ex.setup(optimizer=_big_sgd), lambda: ex.two_models(dead_bias))

    def run(self, h: Harness) -> CheckResult:
        rec = h.record(STEPS)
        root = rec.modules[0][1] if rec.modules else None
        if not rec.relus_start and root is not None and (issubclass(root, (nn.ModuleDict, nn.ModuleList))
                                                         or not has_forward(root)):
            return self._each_model(h)  # only the step knows how to call its models
        x = h.input_tensor()
        if len(x) < 2:
            return self.skipped("the fixed batch has one sample; dead units are judged over several samples")
        # measured by the shared run at its start and after STEPS steps
        if not rec.relus_start:
            return self.skipped("the model calls no ReLU (nn.ReLU, F.relu, torch.relu) on batched tensors")
        return self._verdict(rec.relus_start, rec.relus_end, len(x), rec.relus_steps)

    def _each_model(self, h: Harness) -> CheckResult:
        """Measure each model of a dict or list on the arguments the user's step first called it with."""
        start: list[tuple[str, float, int]] = []
        end: list[tuple[str, float, int]] = []
        samples: list[int] = []
        with h.session() as s:
            calls = part_calls(s.model, s.step)
            s.train(STEPS - 1)
            devices = [h.device] if h.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # dropout masks: no random numbers taken from the run
                for call in calls:
                    x = call.tensor()
                    if x is None or len(x) < 2:
                        continue
                    samples.append(len(x))
                    end.extend(_named(call.name, measure_relus(call.module, call.call)))
                    with call.at_start():
                        start.extend(_named(call.name, measure_relus(call.module, call.call)))
        if not end:
            return self.skipped("no model the step calls uses a ReLU (nn.ReLU, F.relu, torch.relu) on the "
                                "batched tensors the step gives it")
        return self._verdict(start, end, min(samples), STEPS)

    def _verdict(self, start: list[tuple[str, float, int]], end: list[tuple[str, float, int]],
                 samples: int, steps: int) -> CheckResult:
        before = {label: dead for label, dead, _ in start}
        worst = max(end or start, key=lambda layer: layer[1])
        label, dead, units = worst
        facts: dict[str, Any] = dict(layer=label, dead_fraction=dead, units=units, samples=samples,
                                     dead_at_init=before.get(label), steps=steps, relu_layers=len(end))
        if dead >= DEAD:
            init = before.get(label)
            when = (f"already {init:.0%} at initialization" if init is not None and init >= DEAD
                    else f"{init:.0%} at initialization" if init is not None else "")
            return self.warned(
                f"after {steps} training steps, {dead:.0%} of the {units} units of ReLU layer `{label}` are <= 0 for "
                f"all {samples} samples of the batch ({when}; threshold {DEAD:.0%}): they pass no gradient and "
                "stop learning; lower the learning rate, check the initialization and biases, or use LeakyReLU/GELU",
                **facts)
        return self.passed(f"{len(end)} ReLU layer(s): at most {dead:.0%} of units dead over {samples} samples "
                           f"after {steps} steps (`{label}`)", **facts)


def _named(model: str, layers: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    """Prefix each ReLU's label with the name of its model in the dict or list."""
    return [(f"{model}.{label}" if " " not in label else f"{model}: {label}", dead, units)
            for label, dead, units in layers]

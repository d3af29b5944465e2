"""TRN202: a biased Conv/Linear output normalized by BatchNorm makes the bias dead weight (D5)."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness, call_user
from pytest_traincheck.harness.trace import VIEW_LIKE

_PRODUCERS = (nn.Linear, nn.modules.conv._ConvNd)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
RATIO = 1e-4  # |grad bias| / |grad weight| below this confirms the bias is normalized away


def _biased_bn() -> nn.Module:
    # The mistake this check exists to catch, on purpose.
    return nn.Sequential(nn.Linear(ex.FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, ex.CLASSES))  # noqa: TRN202


def _relu_between() -> nn.Module:
    return nn.Sequential(nn.Linear(ex.FEATURES, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, ex.CLASSES))


def _find_producer(t: Any, produced: dict[int, tuple[Any, str]], depth: int = 4) -> str | None:
    if id(t) in produced and produced[id(t)][0] is t:
        return produced[id(t)][1]
    node = getattr(t, "grad_fn", None)
    for _ in range(depth):
        if node is None:
            return None
        hit = produced.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        if re.sub(r"Backward\d*$", "", type(node).__name__) not in VIEW_LIKE:
            return None
        parents = [f for f, _ in node.next_functions if f is not None]
        node = parents[0] if len(parents) == 1 else None
    return None


class BiasBeforeBatchNorm(Check):
    """Warn when a layer with a bias feeds BatchNorm/InstanceNorm directly (and its bias gets ~0 gradient).

    ## What it measures
    Finds Linear/Conv layers with a bias whose output goes straight into a BatchNorm/InstanceNorm
    layer (forward hooks), then confirms after a backward that the bias gradient is negligible next
    to the weight gradient.

    ## Why it matters
    Normalization subtracts the per-channel mean, so a constant bias before it is removed again: it
    is a wasted parameter that the optimizer keeps updating for nothing (and weight decay shrinks
    for nothing).

    ## Thresholds
    Warns when `|grad bias| / |grad weight|` is below 1e-4. It warns; `--train-sanity-strict` makes
    the warning fail the run. Fixed; turn the check off with `--train-sanity-ignore TRN202` (or
    `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Only direct producer-to-norm connections are seen; a bias before a norm layer reached through an
    activation is (correctly) not flagged.

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16))  # bias=True by default
    ```
    """

    CODE = "TRN202"
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(model=lambda: ex.MLP(batchnorm=True)), lambda: ex.setup(model=_relu_between))
    FAILING = (lambda: ex.setup(model=_biased_bn),)

    def run(self, h: Harness) -> CheckResult:
        model = h.model()
        modules = dict(model.named_modules())
        if not any(isinstance(m, _NORMS) for m in modules.values()):
            return self.passed("the model has no BatchNorm/InstanceNorm layer")
        produced: dict[int, tuple[Any, str]] = {}
        pairs: dict[str, str] = {}
        handles = []
        for name, m in modules.items():
            if isinstance(m, _PRODUCERS) and m.bias is not None:
                handles.append(m.register_forward_hook(self._record(name, produced)))
            elif isinstance(m, _NORMS):
                handles.append(m.register_forward_pre_hook(self._match(name, produced, pairs)))
        try:
            model.zero_grad()
            loss = h.loss(model)
            call_user("the backward of the loss", loss.backward)
        finally:
            for handle in handles:
                handle.remove()
        return self._verdict(pairs, modules)

    @staticmethod
    def _record(name: str, produced: dict[int, tuple[Any, str]]) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                produced[id(out)] = (out, name)
                if out.grad_fn is not None:
                    produced[id(out.grad_fn)] = (out.grad_fn, name)
        return hook

    @staticmethod
    def _match(name: str, produced: dict[int, tuple[Any, str]], pairs: dict[str, str]) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            source = _find_producer(args[0], produced) if args else None
            if source is not None:
                pairs.setdefault(source, name)
        return hook

    def _verdict(self, pairs: dict[str, str], modules: dict[str, nn.Module]) -> CheckResult:
        confirmed = []
        for layer, norm in pairs.items():
            m = modules[layer]
            gb, gw = m.bias.grad, m.weight.grad
            ratio = float(gb.norm() / gw.norm()) if gb is not None and gw is not None and float(gw.norm()) else 0.0
            if ratio < RATIO:
                confirmed.append((layer, norm, ratio))
        if not confirmed:
            return self.passed("no layer with a bias feeds a BatchNorm/InstanceNorm directly")
        layer, norm, ratio = confirmed[0]
        others = f" (and {len(confirmed) - 1} more)" if len(confirmed) > 1 else ""
        return self.warned(
            f"`{layer}` has a bias and its output goes straight into `{norm}`{others}, which subtracts the batch "
            f"mean: the bias's gradient is {ratio:.1e} of the weight's, so it is a wasted parameter; "
            f"create `{layer}` with `bias=False`",
            layer=layer, norm=norm, grad_ratio=ratio, pairs=len(confirmed))

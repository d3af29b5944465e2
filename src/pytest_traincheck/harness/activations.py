"""Activation statistics: which units of each ReLU are positive for some sample of a batch.

One no-grad forward in train mode under a `TorchFunctionMode` sees every ReLU,
the module kind (`nn.ReLU`) and the functional ones (`F.relu`, `torch.relu`,
`Tensor.relu`), and reduces each output to the fraction of its units that are
<= 0 for every sample. The shared training run measures this at its start and
after `record.WINDOW` steps; TRN606 judges it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["RELU_FUNCTIONS", "ReluRecorder", "measure_relus"]

RELU_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_})


class ReluRecorder(TorchFunctionMode):
    """Record, per ReLU call of one forward pass, which units were positive for some sample."""

    def __init__(self) -> None:
        super().__init__()
        self.current: Optional[str] = None  # set by an nn.ReLU pre-hook: its module name
        self.after: Optional[str] = None  # the last leaf module that ran: names a functional relu
        self.found: list[tuple[str, torch.Tensor, int]] = []  # (label, dead fraction as a 0-d tensor, units)

    @property
    def layers(self) -> list[tuple[str, float, int]]:
        """Return (label, dead fraction, units) per ReLU call, read from the device in one transfer."""
        if not self.found:
            return []
        fractions = torch.stack([f.to(torch.float64) for _, f, _ in self.found]).tolist()
        return [(label, fraction, units) for (label, _, units), fraction in zip(self.found, fractions)]

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in RELU_FUNCTIONS and isinstance(out, torch.Tensor) and out.ndim >= 2 and out.shape[0] > 1:
            label = self.current or (f"relu after {self.after}" if self.after else f"relu call {len(self.found) + 1}")
            self.current = None
            self.found.append((label, *_dead_fraction(out.detach())))
        return out


def _dead_fraction(out: torch.Tensor) -> tuple[torch.Tensor, int]:
    # A unit is a channel of a conv feature map (N, C, H, W[, D]), else one output feature.
    units = out.transpose(0, 1).flatten(1).T if out.ndim >= 4 else out.flatten(1)
    alive = (units > 0).any(dim=0)
    return 1.0 - alive.float().mean(), int(alive.numel())


def measure_relus(model: nn.Module, forward: Callable[[], Any]) -> list[tuple[str, float, int]]:
    """Run ``forward()`` (one forward of ``model``) without grad in train mode; return each ReLU call's dead fraction."""
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

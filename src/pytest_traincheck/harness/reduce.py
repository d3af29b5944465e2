"""Fused reductions over many tensors, and `Pending`: values read back from the device in one transfer.

The instrumentation measures every gradient (and, for a few steps, every
parameter) at every optimizer step. One `torch._foreach_norm` per group of
tensors sharing a device and dtype replaces one Python call per tensor, and
`Pending` collects the resulting 0-d tensors (norms, loss values) so that a
step waits for the device once, not once per value.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional, Sequence

import torch

__all__ = ["Pending", "copies", "differences", "norm", "norms", "values"]

_HALF = (torch.float16, torch.bfloat16, torch.float32)


def values(t: torch.Tensor) -> torch.Tensor:
    """Return the entries that hold values: all of a dense tensor, the stored ones of a sparse one."""
    t = t.detach()
    return t.coalesce().values() if t.is_sparse else t


def norm(t: torch.Tensor, order: float = 2.0) -> torch.Tensor:
    """Return one tensor's norm as a 0-d real tensor, without waiting for it.

    Half and bfloat16 values are summed in float32; float64 and complex ones keep
    their own precision (torch refuses to narrow them). Sparse tensors (gradients
    of ``nn.Embedding(sparse=True)``) are measured by their stored values.
    """
    t = values(t)
    if t.is_floating_point() and t.dtype != torch.float64:
        return torch.linalg.vector_norm(t, order, dtype=torch.float32)
    if not t.is_floating_point() and not t.is_complex():
        t = t.double()
    return torch.linalg.vector_norm(t, order)


def norms(tensors: Sequence[torch.Tensor], order: float = 2.0) -> list[torch.Tensor]:
    """Return the norm of each tensor as 0-d tensors, one fused kernel per (device, dtype) group."""
    out: list[Optional[torch.Tensor]] = [None] * len(tensors)
    groups: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        if t.is_sparse or t.layout != torch.strided or t.dtype not in _HALF + (torch.float64,):
            out[i] = norm(t, order)  # sparse, complex, integer: rare, measured one by one
        else:
            groups[(t.device, t.dtype)].append(i)
    for (_, dtype), index in groups.items():
        group = [tensors[i].detach() for i in index]
        kwargs = {"dtype": torch.float32} if dtype in _HALF else {}
        try:
            results = torch._foreach_norm(group, order, **kwargs)
        except (RuntimeError, TypeError):  # an older torch without dtype=, or an unusual layout
            results = [norm(t, order) for t in group]
        for i, value in zip(index, results):
            out[i] = value
    return out  # type: ignore[return-value]


class Pending:
    """0-d tensors whose values are wanted later: `read()` brings them all to Python in one transfer."""

    def __init__(self) -> None:
        self._tensors: list[torch.Tensor] = []
        self._slots: list[tuple[Any, Any, Any]] = []  # (owner, key, source): owner[key] = value after read
        self.cache: dict[int, tuple[Any, float]] = {}  # id(source) -> (source, value), from the last read

    def __len__(self) -> int:
        return len(self._tensors)

    def want(self, t: torch.Tensor, owner: Any, key: Any, source: Any = None) -> None:
        """Set ``owner[key]`` to ``t``'s value at the next `read()`; `value(source)` answers it after."""
        self._tensors.append(t)
        self._slots.append((owner, key, source))

    def read(self) -> None:
        """Read every wanted value (one transfer per device) and fill its slot."""
        tensors, slots = self._tensors, self._slots
        self._tensors, self._slots = [], []
        self.cache = {}
        for value, (owner, key, source) in zip(_read(tensors), slots):
            owner[key] = value
            if source is not None:
                self.cache[id(source)] = (source, value)

    def value(self, t: torch.Tensor) -> float:
        """Return a scalar tensor's value, from the last `read()` when it was read there."""
        seen = self.cache.get(id(t))
        if seen is not None and seen[0] is t:
            return seen[1]
        return float(t.detach())


def _read(tensors: list[torch.Tensor]) -> list[float]:
    """Bring 0-d tensors to Python floats in one transfer per device."""
    if not tensors:
        return []
    by_device: dict[Any, list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        by_device[t.device].append(i)
    out = [0.0] * len(tensors)
    for index in by_device.values():
        group = [tensors[i].detach().reshape(()) for i in index]
        if len({t.dtype for t in group}) > 1 or any(t.is_complex() for t in group):
            group = [t.real.to(torch.float64) if t.is_complex() else t.to(torch.float64) for t in group]
        for i, value in zip(index, torch.stack(group).tolist()):
            out[i] = float(value)
    return out


def copies(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Return detached copies of ``params`` (one fused kernel where torch has it)."""
    detached = [p.detach() for p in params]
    try:
        return list(torch._foreach_mul(detached, 1.0))
    except (RuntimeError, TypeError, AttributeError):
        return [p.clone() for p in detached]


def differences(params: list[torch.Tensor], before: list[torch.Tensor]) -> list[torch.Tensor]:
    """Return each parameter minus its copy from before the step (one fused kernel where torch has it)."""
    detached = [p.detach() for p in params]
    try:
        return list(torch._foreach_sub(detached, before))
    except (RuntimeError, TypeError, AttributeError):
        return [p - b for p, b in zip(detached, before)]

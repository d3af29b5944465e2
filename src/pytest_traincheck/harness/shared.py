"""Modules a setup's model factory hands out on every call (a pretrained backbone in a global).

Each check trains "a fresh model", but a submodule the factory reuses between calls
outlives the model: training moves its parameters, `.train()` flips its mode and
`.to(device)` moves it. `SharedModules` finds such modules by building the model
twice and saves their state before any check runs. Each model a check builds gets
copies of them (so two models of one check, or two checks, never train one object),
and the saved state is put back after each check for code that reaches the shared
module other than through the model (a global called in `forward`): the user's
object is left as it was, and every check starts from the user's weights.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import nn

__all__ = ["SharedModules"]


class SharedModules:
    """The saved state (tensors, gradients, requires_grad, mode) of modules shared between factory calls."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.names = [type(m).__name__ for m in modules]
        self._saved: list[tuple[nn.Module, bool, list[tuple[Any, ...]]]] = []
        for module in modules:
            entries = []
            for store in (module._parameters, module._buffers):
                for name, tensor in store.items():
                    if tensor is None:
                        continue
                    grad = tensor.grad.detach().clone() if tensor.grad is not None else None
                    entries.append((store, name, tensor, tensor.detach().clone(), tensor.requires_grad, grad))
            self._saved.append((module, module.training, entries))

    @classmethod
    def between(cls, first: nn.Module, second: nn.Module) -> Optional[SharedModules]:
        """Return the modules found in both of two factory results (none: None)."""
        earlier = {id(m) for m in first.modules()}
        shared = [m for m in second.modules() if id(m) in earlier]
        return cls(shared) if shared else None

    def __len__(self) -> int:
        return len(self._saved)

    def copied_into(self, model: nn.Module) -> nn.Module:
        """Replace the shared submodules of a new ``model`` (and parameters tied to them) by copies."""
        shared = {id(m) for m, _, _ in self._saved}
        memo: dict[int, Any] = {}
        parents, seen = [model], {id(model)}
        try:
            while parents:  # the model's own modules only: never rewire the shared module's insides
                parent = parents.pop()
                for name, child in list(parent._modules.items()):
                    if child is None:
                        continue
                    if id(child) in shared:
                        parent._modules[name] = copy.deepcopy(child, memo)
                    elif id(child) not in seen:
                        seen.add(id(child))
                        parents.append(child)
        except Exception:  # noqa: BLE001 - a module that cannot be copied stays shared (restored after the check)
            return model
        for module in model.modules():  # a fresh head tied to a shared embedding gets the copy too
            for store in (module._parameters, module._buffers):
                for name, tensor in list(store.items()):
                    if tensor is not None and id(tensor) in memo:
                        store[name] = memo[id(tensor)]
        return model

    def restore(self) -> None:
        """Put back every saved tensor (values, device, dtype), gradient, requires_grad flag and mode."""
        with torch.no_grad():
            for module, training, entries in self._saved:
                module.training = training
                for store, name, original, saved, requires_grad, grad in entries:
                    store[name] = original  # `.to()` may have swapped the object itself
                    original.data = saved.clone()  # a copy: the next check trains it in place again
                    if isinstance(original, nn.Parameter) or original.is_leaf:
                        original.requires_grad_(requires_grad)
                        original.grad = grad.clone() if grad is not None else None

    def __getstate__(self) -> dict[str, Any]:
        # Sent to spawned ranks with the setup: the ranks never restore, so send nothing heavy.
        return {"names": self.names, "_saved": []}

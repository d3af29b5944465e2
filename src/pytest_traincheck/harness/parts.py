"""The models of a dict or list of models (a GAN), each with the inputs the user's step gave it.

Only the step knows how to call the models of a dict (the generator takes noise, the
discriminator real or generated samples), so checks that call a model themselves
watch one step: each model's first call is kept (its arguments and its weights at
that moment) and replayed later, one model at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from pytest_traincheck.harness import batch as tb

__all__ = ["PartCall", "is_several", "part_calls"]


def is_several(model: nn.Module) -> bool:
    """True for a dict or list of models (what a `model` factory returning several models becomes)."""
    return isinstance(model, (nn.ModuleDict, nn.ModuleList))


@dataclass
class PartCall:
    """One model of the container, with its first call in the step."""

    name: str
    module: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    initial: dict[str, torch.Tensor]  # its state when first called (initial weights)

    def tensor(self) -> Optional[torch.Tensor]:
        """Return the tensor that carries the samples: the first batched one of the call's arguments."""
        return tb.first_tensor((self.args, self.kwargs))

    def call(self, replacement: Optional[torch.Tensor] = None) -> Any:
        """Call the model as the step did, with the samples tensor replaced by ``replacement`` if given."""
        args, kwargs = self.args, self.kwargs
        if replacement is not None:
            chosen = self.tensor()
            args, kwargs = tb.tree_map(lambda t: replacement if t is chosen else t, (args, kwargs))
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def at_start(self) -> Iterator[None]:
        """Give the model its initial weights inside, its current ones after."""
        current = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.initial)
        try:
            yield
        finally:
            self.module.load_state_dict(current)


def part_calls(model: nn.Module, run: Callable[[], Any]) -> list[PartCall]:
    """Run ``run()`` (the user's step) and return each model's first call in it, in container order."""
    parts = list(model.named_children())
    seen: dict[str, PartCall] = {}
    handles = []

    def capture(name: str, module: nn.Module) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if name not in seen:
                args, kwargs = tb.tree_map(lambda t: t.detach().clone(), (args, kwargs))
                state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                seen[name] = PartCall(name, module, tuple(args), dict(kwargs), state)
        return hook

    try:
        for name, module in parts:
            handles.append(module.register_forward_pre_hook(capture(name, module), with_kwargs=True))
        run()
    finally:
        for handle in handles:
            handle.remove()
    return [seen[name] for name, _ in parts if name in seen]

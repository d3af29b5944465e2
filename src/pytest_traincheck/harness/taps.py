"""Process-wide taps on the functional losses, the clip functions and ``torch.autograd.backward``.

Wrapping these few functions (one extra Python call each) is how a `Trace` sees
loss calls, clipping and backward() without a hook on every torch operation.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.nn import functional as F

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.trace import Trace

__all__ = ["CLIP_FUNCTIONS", "LOSS_FUNCTIONS", "TAPS"]

LOSS_FUNCTIONS: dict[Any, str] = {
    F.cross_entropy: "cross_entropy",
    F.nll_loss: "nll_loss",
    F.binary_cross_entropy: "binary_cross_entropy",
    F.binary_cross_entropy_with_logits: "binary_cross_entropy_with_logits",
    F.mse_loss: "mse_loss",
}
CLIP_FUNCTIONS = ("clip_grad_norm_", "clip_grad_value_", "clip_grad_norm")
# Big libraries never hold a user's `from torch.nn.utils import clip_grad_norm_`.
_SKIP_MODULE_PREFIXES = ("torch", "numpy", "_pytest", "pytest", "pluggy", "tensorboard", "scipy",
                         "pandas", "sympy", "triton", "google", "IPython", "libcst")


class _Taps:
    """Process-wide wrappers around the functional losses, the clip functions and `torch.autograd.backward`.

    They are installed when the first `Trace` opens and removed when the last one
    closes, whatever order traces close in, and every open trace hears every call.
    Copies that user modules hold (``from torch.nn.functional import cross_entropy``)
    are replaced too, so such calls are seen as well.
    """

    def __init__(self) -> None:
        self.traces: list[Trace] = []
        self._undo: list[Callable[[], None]] = []

    def add(self, trace: Trace) -> None:
        """Let ``trace`` hear loss and clip calls, installing the wrappers if none are."""
        if not self.traces:
            self._install()
        self.traces.append(trace)

    def remove(self, trace: Trace) -> None:
        """Stop ``trace`` hearing calls; remove the wrappers when no trace is left."""
        if trace in self.traces:
            self.traces.remove(trace)
        if not self.traces:
            while self._undo:
                self._undo.pop()()

    def _install(self) -> None:
        import torch.nn.utils as nn_utils
        from torch.nn.utils import clip_grad as clip_module

        wrappers: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}
        for original, kind in LOSS_FUNCTIONS.items():
            wrappers[id(original)] = (original, self._loss_wrapper(kind, original))
        for fname in CLIP_FUNCTIONS:
            original = getattr(nn_utils, fname, None)
            if original is not None:
                wrappers[id(original)] = (original, self._clip_wrapper(fname, original))
        original_backward = torch.autograd.backward
        torch.autograd.backward = self._backward_wrapper(original_backward)
        self._undo.append(lambda: setattr(torch.autograd, "backward", original_backward))
        for owner in [F, nn_utils, clip_module, *_user_modules()]:
            for attr, value in list(vars(owner).items()):
                found = wrappers.get(id(value))
                if found is not None and found[0] is value:
                    setattr(owner, attr, found[1])
                    self._undo.append(lambda o=owner, a=attr, v=value: setattr(o, a, v))

    def _loss_wrapper(self, kind: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def loss(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if args or "input" in kwargs:
                for trace in list(self.traces):
                    trace.on_loss(kind, args, kwargs, out)
            return out

        loss.__wrapped__ = original  # type: ignore[attr-defined]
        return loss

    def _backward_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            root = tensors if isinstance(tensors, torch.Tensor) else next(iter(tensors), None)
            if isinstance(root, torch.Tensor):
                for trace in list(self.traces):
                    trace.on_backward(root)
            return original(tensors, *args, **kwargs)

        backward.__wrapped__ = original  # type: ignore[attr-defined]
        return backward

    def _clip_wrapper(self, fname: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def clip(*args: Any, **kwargs: Any) -> Any:
            for trace in list(self.traces):
                if trace.phase == "step":
                    trace.on_clip(fname)
            return original(*args, **kwargs)

        clip.__wrapped__ = original  # type: ignore[attr-defined]
        return clip


TAPS = _Taps()


def _user_modules() -> list[Any]:
    # Also patch `from torch.nn.utils import clip_grad_norm_` copies held by user modules.
    return [m for name, m in list(sys.modules.items())
            if m is not None and not name.startswith(_SKIP_MODULE_PREFIXES) and hasattr(m, "__dict__")
            and _is_plain_module(m)]


def _is_plain_module(m: Any) -> bool:
    try:
        vars(m)
    except TypeError:
        return False
    return True

"""Instrumentation: what the user's step did, observed through public torch hooks only.

A `Trace` is attached to one fresh model + optimizer. It records an event
string (F forward, B backward, Z zero_grad, C clip, S step), per-step gradient
facts, stale gradients, clip calls, forward-time modes and every loss call.

The instrumentation is built to cost little per step: the functional losses and
the clip functions are wrapped (one Python call each, not a hook on every torch
op), gradient norms are kept as tensors and read back in one transfer at the
optimizer's step, and a stale gradient is recognised by its tensor's identity
and version counter instead of a copy compared element by element.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

LOSS_FUNCTIONS: dict[Any, str] = {
    F.cross_entropy: "cross_entropy",
    F.nll_loss: "nll_loss",
    F.binary_cross_entropy: "binary_cross_entropy",
    F.binary_cross_entropy_with_logits: "binary_cross_entropy_with_logits",
    F.mse_loss: "mse_loss",
}
CLIP_FUNCTIONS = ("clip_grad_norm_", "clip_grad_value_", "clip_grad_norm")
VIEW_LIKE = frozenset({
    "View", "UnsafeView", "Reshape", "ReshapeAlias", "Squeeze", "SqueezeDim", "SqueezeDims",
    "Unsqueeze", "Transpose", "Permute", "T", "Clone", "ToCopy", "Expand", "Slice", "Select",
    "AsStrided", "Alias", "Narrow", "Flatten",
})
_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
# Big libraries never hold a user's `from torch.nn.utils import clip_grad_norm_`.
_SKIP_MODULE_PREFIXES = ("torch", "numpy", "_pytest", "pytest", "pluggy", "tensorboard", "scipy",
                         "pandas", "sympy", "triton", "google", "IPython", "libcst")


def provenance(t: Any, depth: int = 5) -> Optional[str]:
    """Name the activation (Softmax, LogSoftmax, Sigmoid) that produced ``t``, seen through views."""
    node = getattr(t, "grad_fn", None)
    for _ in range(depth):
        if node is None:
            return None
        base = re.sub(r"Backward\d*$", "", type(node).__name__)
        if base in _ACTIVATIONS:
            return base
        if base not in VIEW_LIKE:
            return None
        parents = [f for f, _ in node.next_functions if f is not None]
        if len(parents) != 1:
            return None
        node = parents[0]
    return None


@dataclass
class LossCall:
    """One call of a functional loss: its inputs (detached) and where they came from."""

    kind: str
    input: torch.Tensor
    target: Optional[torch.Tensor]
    source: Optional[str]  # provenance(input)
    value: Optional[float]
    phase: str


@dataclass
class StepRecord:
    """What `optimizer.step()` saw at its pre-hook, and what it changed."""

    index: int
    had_backward: bool
    closure: bool
    zero_grad_after_backward: bool
    grads_none: list[str]
    grads_zero: list[str]
    grads_nonfinite: list[str]
    norm_at_step: float
    norm_after_backward: float
    unchanged: list[str] = field(default_factory=list)  # nonzero grad, same value after step


@dataclass
class StaleGrad:
    """A gradient still holding the previous step's value when backward adds to it."""

    step: int
    param: str
    max_abs_diff: float  # |grad - (previous grad + new grad)| after accumulation
    stale_norm: float


@dataclass
class ClipCall:
    """One clip_grad_* call and where it fell in the backward/step sequence."""

    function: str
    step: int
    position: str  # "between backward and step", "before backward", "after step"

    @property
    def effective(self) -> bool:
        """True when the clip runs between backward and step, where it changes the update."""
        return self.position == "between backward and step"


@dataclass
class GraphCut:
    """A backward() that reached none of the optimizer's parameters, and what the loss's graph held."""

    step: int
    kind: str  # "no-grad": the loss has no graph; "leaf": the loss is a leaf; "foreign": leaves that are not params
    foreign_shapes: list[tuple[int, ...]] = field(default_factory=list)


def graph_cut(root: torch.Tensor, params: set[int], step: int, limit: int = 100_000) -> Optional[GraphCut]:
    """Return how ``root``'s graph misses every parameter in ``params``, or None if it reaches one."""
    if not root.requires_grad:
        return GraphCut(step, "no-grad")
    if root.grad_fn is None:
        return GraphCut(step, "leaf", [tuple(root.shape)])
    foreign: list[tuple[int, ...]] = []
    seen, todo = set(), [root.grad_fn]
    while todo and len(seen) < limit:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            if id(variable) in params:
                return None
            foreign.append(tuple(variable.shape))
        todo.extend(f for f, _ in node.next_functions)
    return GraphCut(step, "foreign", foreign)


@dataclass
class ForwardRecord:
    """The model's modes when the root module's forward ran."""

    phase: str
    grad_enabled: bool
    root_training: bool
    train_modules: list[str]
    eval_modules: list[str]


class _Taps:
    """Process-wide wrappers around the functional losses and the clip functions.

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


_TAPS = _Taps()


def mode_dependent(module: nn.Module) -> bool:
    """True for layers whose forward differs between train and eval mode."""
    return isinstance(module, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm,
                               nn.modules.instancenorm._InstanceNorm))


def _frozen(module: nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _mode_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # Frozen sub-models kept in eval on purpose (timm, HF) are exempt (CHECKS.md D6).
    modules = dict(model.named_modules())
    out = []
    for name, m in modules.items():
        parent = modules.get(name.rpartition(".")[0]) if name else None
        if mode_dependent(m) and not _frozen(m) and not (parent is not None and _frozen(parent)):
            out.append((name or "<model>", m))
    return out


def _norm(t: torch.Tensor) -> float:
    return float(_norm_tensor(t))


def _values(t: torch.Tensor) -> torch.Tensor:
    """Return the entries that hold values: all of a dense tensor, the stored ones of a sparse one."""
    t = t.detach()
    return t.coalesce().values() if t.is_sparse else t


def _norm_tensor(t: torch.Tensor) -> torch.Tensor:
    """Return the 2-norm as a 0-d real tensor, without waiting for it (no host transfer).

    Half and bfloat16 gradients are summed in float32; float64 and complex ones keep
    their own precision (torch refuses to narrow them). Sparse gradients (from
    ``nn.Embedding(sparse=True)``) are measured by their stored values.
    """
    t = _values(t)
    if t.is_floating_point() and t.dtype != torch.float64:
        return torch.linalg.vector_norm(t, dtype=torch.float32)
    return torch.linalg.vector_norm(t)


def _read(norms: list[torch.Tensor]) -> list[float]:
    """Bring 0-d norm tensors to Python floats in one transfer (per device)."""
    if not norms:
        return []
    if len({n.device for n in norms}) > 1:
        return [float(n) for n in norms]
    if len({n.dtype for n in norms}) > 1:
        norms = [n.to(torch.float64) for n in norms]
    return torch.stack(norms).tolist()


@dataclass
class _GradSeen:
    """A gradient tensor as the optimizer left it: the object, its version counter and its norm."""

    grad: torch.Tensor
    version: int
    norm: float

    def still(self, grad: Optional[torch.Tensor]) -> bool:
        """True if ``grad`` is the same tensor, not written in place since (as autograd counts writes)."""
        return grad is self.grad and grad._version == self.version


class Trace:
    """Record one model + optimizer's training events; `close()` removes everything it added."""

    def __init__(self, model: nn.Module, optimizer: Any, check_time: Callable[[], None],
                 track_updates: bool = False) -> None:
        self.model, self.optimizer, self.check_time = model, optimizer, check_time
        self.track_updates = track_updates
        self.phase = "harness"
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.events: list[str] = []
        self.since_step: list[str] = []
        self.steps: list[StepRecord] = []
        self.stale: list[StaleGrad] = []
        self.clips: list[ClipCall] = []
        self.forwards: list[ForwardRecord] = []
        self.losses: list[LossCall] = []
        self.accumulations: Counter[str] = Counter()
        self.cuts: list[GraphCut] = []  # backward() calls that reached no parameter
        self.backward_calls = 0
        self._backward_root: Optional[torch.Tensor] = None
        self.snapshots: dict[str, _GradSeen] = {}  # nonzero gradients left after the last step
        self._nonzero: set[str] = set()
        self._pending: list[tuple[str, torch.Tensor]] = []  # norms after each accumulation, not yet read
        self._after_backward: dict[str, float] = {}
        self._at_step: dict[str, _GradSeen] = {}
        self._incoming: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._before: dict[str, torch.Tensor] = {}
        self.mode_modules = _mode_modules(model)
        self._undo: list[Callable[[], None]] = []
        self._install()

    # -- installation -------------------------------------------------------------
    def _install(self) -> None:
        for p in self.opt_params():
            if not p.requires_grad:
                continue  # frozen parameters get no gradient and accept no hooks
            self._undo.append(p.register_hook(self._pre_accumulate(p)).remove)
            self._undo.append(p.register_post_accumulate_grad_hook(self._post_accumulate).remove)
        self._undo.append(self.optimizer.register_step_pre_hook(self._step_pre).remove)
        self._undo.append(self.optimizer.register_step_post_hook(self._step_post).remove)
        self._undo.append(self.model.register_forward_pre_hook(self._forward_pre).remove)
        for owner in (self.optimizer, self.model):
            self._wrap_zero_grad(owner)
        _TAPS.add(self)
        self._undo.append(lambda: _TAPS.remove(self))

    def close(self) -> None:
        """Remove every hook and restore every patch, newest first."""
        while self._undo:
            self._undo.pop()()

    def name(self, p: torch.Tensor) -> str:
        """Return the parameter's qualified name in the model."""
        return self.names.get(id(p), f"<tensor {tuple(p.shape)} not in model>")

    def opt_params(self) -> list[torch.Tensor]:
        """Return the optimizer's parameters in order, without duplicates."""
        seen: dict[int, torch.Tensor] = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                seen.setdefault(id(p), p)
        return list(seen.values())

    @property
    def accum_nonzero(self) -> set[str]:
        """Names of the parameters that ever received a nonzero gradient from backward."""
        self._settle([])
        return self._nonzero

    def _event(self, kind: str) -> None:
        if self.phase != "step":
            return
        if not (self.events and self.events[-1] == kind and kind in "BF"):
            self.events.append(kind)
            self.since_step.append(kind)

    def _wrap_zero_grad(self, owner: Any) -> None:
        original = owner.zero_grad

        def zero_grad(*args: Any, **kwargs: Any) -> Any:
            self._event("Z")
            return original(*args, **kwargs)

        owner.zero_grad = zero_grad
        self._undo.append(lambda: owner.__dict__.pop("zero_grad", None))

    def _settle(self, more: list[torch.Tensor]) -> list[float]:
        """Read the pending accumulation norms and ``more`` in one transfer; return ``more``'s values."""
        pending, self._pending = self._pending, []
        values = _read([norm for _, norm in pending] + more)
        for (name, _), value in zip(pending, values):
            self._after_backward[name] = value
            if value > 0:
                self._nonzero.add(name)
        return values[len(pending):]

    # -- hooks ----------------------------------------------------------------------
    def _pre_accumulate(self, p: torch.Tensor) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            name = self.name(p)
            seen = self.snapshots.pop(name, None)
            # The gradient the last step used is about to be added to: stale unless cleared since.
            # Writes through `.data` bypass the version counter, so the norm must match too.
            if seen is not None and seen.still(p.grad) and _norm(p.grad) == seen.norm:
                self._incoming[name] = (p.grad.detach().clone(), grad.detach().clone())
        return hook

    def _post_accumulate(self, p: torch.Tensor) -> None:
        name = self.name(p)
        self._event("B")
        self.accumulations[name] += 1
        grad = p.grad
        if grad is None:
            return
        self._pending.append((name, _norm_tensor(grad)))
        stale = self._incoming.pop(name, None)
        if stale is not None:
            snap, incoming = stale
            residue = _values(grad.detach() - snap - incoming)
            diff = float(residue.abs().max()) if residue.numel() else 0.0
            self.stale.append(StaleGrad(len(self.steps), name, diff, _norm(snap)))

    def _forward_pre(self, module: nn.Module, args: Any) -> None:
        self.check_time()
        if self.phase == "harness":
            return
        self._event("F")
        self.forwards.append(ForwardRecord(
            self.phase, torch.is_grad_enabled(), module.training,
            [n for n, m in self.mode_modules if m.training],
            [n for n, m in self.mode_modules if not m.training]))

    def _step_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.check_time()
        named = [(self.name(p), p) for p in self.opt_params()]
        none = [name for name, p in named if p.grad is None]
        graded = [(name, p, p.grad) for name, p in named if p.grad is not None]
        norms = self._settle([_norm_tensor(g) for _, _, g in graded])
        zero, bad = [], []
        self._at_step = {}
        for (name, p, g), norm in zip(graded, norms):
            # A finite norm means finite entries; a zero norm may be underflow, so ask the tensor.
            if not math.isfinite(norm):
                if not bool(torch.isfinite(_values(g)).all()):
                    bad.append(name)
            elif norm == 0.0 and not bool(_values(g).any()):
                zero.append(name)
            self._at_step[name] = _GradSeen(g, g._version, norm)
            if self.track_updates:
                self._before[name] = p.detach().clone()
        since = self.since_step
        last_b = max((i for i, e in enumerate(since) if e == "B"), default=-1)
        root, self._backward_root = self._backward_root, None
        if last_b < 0 and root is not None and not any(c.step == len(self.steps) for c in self.cuts):
            cut = graph_cut(root, {id(p) for p in self.opt_params()}, len(self.steps))
            if cut is not None:
                self.cuts.append(cut)
        self.steps.append(StepRecord(
            index=len(self.steps), had_backward=last_b >= 0,
            closure=any(callable(a) for a in args if a is not optimizer) or callable(kwargs.get("closure")),
            zero_grad_after_backward=last_b >= 0 and "Z" in since[last_b:],
            grads_none=none, grads_zero=zero, grads_nonfinite=bad, norm_at_step=sum(n * n for n in norms) ** 0.5,
            norm_after_backward=sum(v * v for v in self._after_backward.values()) ** 0.5))
        self._after_backward = {}
        self._event("S")
        self.since_step = []

    def _step_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        record = self.steps[-1]
        for p in self.opt_params():
            name = self.name(p)
            before = self._before.pop(name, None)
            grad = p.grad
            if grad is None:
                self.snapshots.pop(name, None)
                continue
            seen = self._at_step.get(name)
            norm = seen.norm if seen is not None and seen.still(grad) else _norm(grad)
            nonzero = norm != 0.0 or bool(_values(grad).any())  # NaN counts as nonzero, as in `Tensor.any`
            if before is not None and nonzero and torch.equal(before, p.detach()):
                record.unchanged.append(name)
            if nonzero:
                self.snapshots[name] = _GradSeen(grad, grad._version, norm)
            else:
                self.snapshots.pop(name, None)
        self._at_step = {}

    # -- callbacks from the loss and clip wrappers ------------------------------------------
    def on_loss(self, kind: str, args: tuple, kwargs: dict, out: Any) -> None:
        """Record one functional loss call."""
        inp = args[0] if args else kwargs["input"]
        target = args[1] if len(args) > 1 else kwargs.get("target")
        if not isinstance(inp, torch.Tensor):
            return
        value = float(out.detach()) if isinstance(out, torch.Tensor) and out.numel() == 1 else None
        self.losses.append(LossCall(kind, inp.detach(), target.detach() if isinstance(target, torch.Tensor) else None,
                                    provenance(inp), value, self.phase))

    def on_backward(self, root: torch.Tensor) -> None:
        """Record a backward() call of the step; a loss without a graph is recorded as a cut at once."""
        if self.phase != "step":
            return
        self.backward_calls += 1
        self._backward_root = root
        if not root.requires_grad:  # backward() is about to raise: keep the evidence
            self.cuts.append(GraphCut(len(self.steps), "no-grad"))

    def on_clip(self, fname: str) -> None:
        """Record a clip call and where it fell relative to backward and step."""
        if "B" in self.since_step:
            position = "between backward and step"
        elif self.steps:
            position = "after step"
        else:
            position = "before backward"
        self._event("C")
        self.clips.append(ClipCall(fname, len(self.steps), position))


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

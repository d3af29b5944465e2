"""Instrumentation: what the user's step did, observed through torch hooks and a few patched functions.

A `Trace` is attached to one fresh model + optimizer. It records an event
string (F forward, B backward, Z zero_grad, C clip, S step), per-step gradient
facts, stale gradients, clip calls, forward-time modes and every loss call.

What it changes, exactly, while it is open:

* hooks (public API) on the objects of this session only: a gradient hook and a
  post-accumulate-grad hook on every trainable parameter in the optimizer, the
  optimizer's step pre/post hooks, and a forward pre- and post-hook on the model;
* the ``zero_grad`` of this optimizer and this model, shadowed by an instance
  attribute (the class is untouched);
* process-wide, shared by every open trace (`taps.TAPS`): the functional losses
  ``torch.nn.functional.{cross_entropy, nll_loss, binary_cross_entropy,
  binary_cross_entropy_with_logits, mse_loss}`` (the ``nn.*Loss`` modules call
  these), the clip functions ``torch.nn.utils.{clip_grad_norm_, clip_grad_value_,
  clip_grad_norm}`` (also in ``torch.nn.utils.clip_grad``), and
  ``torch.autograd.backward`` (which ``Tensor.backward`` calls) are replaced by
  wrappers that call the original and report the call; so is every attribute of
  a module in ``sys.modules`` (torch, numpy, pytest and other big libraries
  skipped) that is bound to one of those functions, which is how a user's
  ``from torch.nn.functional import cross_entropy`` is seen.

How long: from opening the trace to the end of its run: the shared training
run of a setup and seed (`record.build`, up to ``overfit_steps`` steps, plus the
harness's own forwards) or a check's own `Harness.session()`, not a single step; `close()` removes the hooks and the
``zero_grad`` shadows, and the process-wide wrappers are restored when the last
open trace closes. The process-wide patches are deliberately not narrowed to each
call of the user's step: installing and removing them scans ``sys.modules``, which
measured 48 ms with 1,248 modules loaded against 8 ms for one step of the example
MLP (2 shared cores), so per-step patching would make a 100-step check about 7x
slower. Nothing is patched while no check runs.

The instrumentation is built to cost little per step: the functional losses and
the clip functions are wrapped (one Python call each, not a hook on every torch
op); gradients are measured by one fused norm per backward pass and one per
optimizer step (`reduce.norms`), and those norms and the loss values are read
back together at the optimizer's step, so a step waits for the device once; a
stale gradient is recognised by its tensor's identity and version counter
instead of a copy compared element by element.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness.reduce import Pending, copies, differences, norm, norms, values
from pytest_traincheck.harness.taps import TAPS

VIEW_LIKE = frozenset({
    "View", "UnsafeView", "Reshape", "ReshapeAlias", "Squeeze", "SqueezeDim", "SqueezeDims",
    "Unsqueeze", "Transpose", "Permute", "T", "Clone", "ToCopy", "Expand", "Slice", "Select",
    "AsStrided", "Alias", "Narrow", "Flatten",
})
_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")


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


KEEP_LOSS_TENSORS = 4  # loss calls of the first step whose input/target are kept (logits can be large)


@dataclass
class LossCall:
    """One call of a functional loss: its inputs (detached, for the first calls) and where they came from."""

    kind: str
    input: Optional[torch.Tensor]  # kept for the first step's calls only (memory)
    target: Optional[torch.Tensor]
    source: Optional[str]  # provenance(input)
    value: Optional[float]  # filled when the step's values are read back
    phase: str
    step: int = 0  # optimizer steps completed before the call
    options: dict[str, Any] = field(default_factory=dict)  # non-tensor keyword arguments (reduction, ...)
    weighted: bool = False  # a `weight`/`pos_weight` tensor was passed


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
    grad_norms: dict[str, float] = field(default_factory=dict)  # per parameter, at the step
    grad_abs_mean: Optional[float] = None  # mean |g| over every gradient entry (watched steps)
    grad_abs_means: dict[str, float] = field(default_factory=dict)  # per parameter (with ratios=True)
    grad_abs_maxes: dict[str, float] = field(default_factory=dict)  # per parameter (with ratios=True)
    params_finite: Optional[bool] = None  # every parameter finite after the step (watched steps)
    update_max: dict[str, float] = field(default_factory=dict)  # max |change| per parameter (tracked steps)
    update_ratio: dict[str, float] = field(default_factory=dict)  # |change| / |before| (with ratios=True)
    param_max: dict[str, float] = field(default_factory=dict)  # max |value| per parameter (watched steps)


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
    output_grad: Optional[bool] = None  # the output (its logits) required grad; None: not seen yet




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


def _scalar(t: torch.Tensor) -> float:
    return float(norm(t))


@dataclass
class _GradSeen:
    """A gradient tensor as the optimizer left it: the object, its version counter and its norm."""

    grad: torch.Tensor
    version: int
    norm: float

    def still(self, grad: Optional[torch.Tensor]) -> bool:
        """True if ``grad`` is the same tensor, not written in place since (as autograd counts writes)."""
        return grad is self.grad and grad._version == self.version


_ALL = 1 << 30


class Trace:
    """Record one model + optimizer's training events; `close()` removes everything it added.

    ``track_updates`` (True, or a number of steps) measures how much each parameter moved
    at the first optimizer steps; ``ratios`` adds the update/weight norm ratio (TensorBoard);
    ``watch_params`` steps also get the mean |gradient| and a finiteness test of every
    parameter. All of it is fused reductions read back with the step's other values.
    """

    def __init__(self, model: nn.Module, optimizer: Any, check_time: Callable[[], None],
                 track_updates: Union[bool, int] = False, ratios: bool = False, watch_params: int = 0) -> None:
        self.model, self.optimizer, self.check_time = model, optimizer, check_time
        self.track_updates = _ALL if track_updates is True else int(track_updates)
        self.ratios, self.watch_params = ratios, watch_params
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
        self.cleared_stale: set[int] = set()  # step intervals whose stale gradients were cleared before step
        self.cuts: list[GraphCut] = []  # backward() calls that reached no parameter
        self.backward_calls = 0
        self._backward_root: Optional[torch.Tensor] = None
        self.snapshots: dict[str, _GradSeen] = {}  # nonzero gradients left after the last step
        self.pending = Pending()  # norms and loss values not yet read from the device
        self._nonzero: set[str] = set()
        self._fresh: list[tuple[str, torch.Tensor]] = []  # gradients accumulated in the running backward
        self._eager = False  # True when end-of-backward callbacks are unavailable
        self._after_backward: dict[str, float] = {}
        self._at_step: dict[str, _GradSeen] = {}
        self._incoming: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._before: Optional[tuple[list[torch.Tensor], list[torch.Tensor]]] = None
        self._unfinished: list[tuple[StepRecord, set[str]]] = []  # steps whose update facts are not read yet
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
        self._undo.append(self.model.register_forward_hook(self._forward_post).remove)
        for owner in (self.optimizer, self.model):
            self._wrap_zero_grad(owner)
        TAPS.add(self)
        self._undo.append(lambda: TAPS.remove(self))

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
        self.settle()
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
            if self.stale and self.stale[-1].step == len(self.steps):
                self.cleared_stale.add(len(self.steps))  # stale, but cleared before this optimizer steps
            return original(*args, **kwargs)

        owner.zero_grad = zero_grad
        self._undo.append(lambda: owner.__dict__.pop("zero_grad", None))

    def settle(self) -> None:
        """Read every pending value in one transfer and finish the steps that waited for them."""
        self._end_backward()
        if len(self.pending):
            self.pending.read()
        self._nonzero.update(name for name, value in self._after_backward.items() if value > 0)
        for record, nonzero in self._unfinished:
            record.unchanged = [n for n, v in record.update_max.items() if v == 0.0 and n in nonzero]
            if record.params_finite is not None:
                record.params_finite = all(math.isfinite(v) for v in record.param_max.values())
        self._unfinished = []

    # -- hooks ----------------------------------------------------------------------
    def _pre_accumulate(self, p: torch.Tensor) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            name = self.name(p)
            seen = self.snapshots.pop(name, None)
            # The gradient the last step used is about to be added to: stale unless cleared since.
            # Writes through `.data` bypass the version counter, so the norm must match too.
            if seen is not None and seen.still(p.grad) and _scalar(p.grad) == seen.norm:
                self._incoming[name] = (p.grad.detach().clone(), grad.detach().clone())
        return hook

    def _post_accumulate(self, p: torch.Tensor) -> None:
        name = self.name(p)
        self._event("B")
        self.accumulations[name] += 1
        grad = p.grad
        if grad is None:
            return
        self._fresh.append((name, grad))
        if len(self._fresh) == 1 and not self._eager:
            try:  # measure every gradient of this backward pass at once, when the pass ends
                torch.autograd.Variable._execution_engine.queue_callback(self._end_backward)
            except (RuntimeError, AttributeError):
                self._eager = True
        if self._eager:
            self._end_backward()
        stale = self._incoming.pop(name, None)
        if stale is not None:
            snap, incoming = stale
            residue = values(grad.detach() - snap - incoming)
            diff = float(residue.abs().max()) if residue.numel() else 0.0
            self.stale.append(StaleGrad(len(self.steps), name, diff, _scalar(snap)))

    def _end_backward(self) -> None:
        fresh, self._fresh = self._fresh, []
        for (name, _), value in zip(fresh, norms([g for _, g in fresh])):
            self.pending.want(value, self._after_backward, name)

    def _forward_pre(self, module: nn.Module, args: Any) -> None:
        self.check_time()
        if self.phase == "harness":
            return
        self._event("F")
        self.forwards.append(ForwardRecord(
            self.phase, torch.is_grad_enabled(), module.training,
            [n for n, m in self.mode_modules if m.training],
            [n for n, m in self.mode_modules if not m.training]))

    def _forward_post(self, module: nn.Module, args: Any, out: Any) -> None:
        if self.phase != "harness" and self.forwards:
            logits = tb.logits_of(out)
            self.forwards[-1].output_grad = bool(logits is not None and logits.requires_grad)

    def _step_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.check_time()
        index = len(self.steps)
        named = [(self.name(p), p) for p in self.opt_params()]
        none = [name for name, p in named if p.grad is None]
        graded = [(name, p, p.grad) for name, p in named if p.grad is not None]
        at_step: dict[str, float] = {}
        for (name, _, _), value in zip(graded, norms([g for _, _, g in graded])):
            self.pending.want(value, at_step, name)
        abs_sums: dict[str, float] = {}
        maxes: dict[str, float] = {}
        if index < self.watch_params or self.ratios:
            for (name, _, _), value in zip(graded, norms([g for _, _, g in graded], 1.0)):
                self.pending.want(value, abs_sums, name)
        if self.ratios:  # per-layer mean and max |grad| for the reports
            for (name, _, _), value in zip(graded, norms([g for _, _, g in graded], math.inf)):
                self.pending.want(value, maxes, name)
        self.settle()
        zero, bad = [], []
        self._at_step = {}
        for name, p, g in graded:
            value = at_step[name]
            # A finite norm means finite entries; a zero norm may be underflow, so ask the tensor.
            if not math.isfinite(value):
                if not bool(torch.isfinite(values(g)).all()):
                    bad.append(name)
            elif value == 0.0 and not bool(values(g).any()):
                zero.append(name)
            self._at_step[name] = _GradSeen(g, g._version, value)
        if index < self.track_updates:
            params = [p for _, p, _ in graded if p.layout == torch.strided]
            self._before = (params, copies(params))
        since = self.since_step
        last_b = max((i for i, e in enumerate(since) if e == "B"), default=-1)
        root, self._backward_root = self._backward_root, None
        if last_b < 0 and root is not None and not any(c.step == len(self.steps) for c in self.cuts):
            cut = graph_cut(root, {id(p) for p in self.opt_params()}, len(self.steps))
            if cut is not None:
                self.cuts.append(cut)
        sizes = {name: values(g).numel() for name, _, g in graded}
        numel = sum(sizes.values())
        self.steps.append(StepRecord(
            index=index, had_backward=last_b >= 0,
            closure=any(callable(a) for a in args if a is not optimizer) or callable(kwargs.get("closure")),
            zero_grad_after_backward=last_b >= 0 and "Z" in since[last_b:],
            grads_none=none, grads_zero=zero, grads_nonfinite=bad,
            norm_at_step=sum(v * v for v in at_step.values()) ** 0.5,
            norm_after_backward=sum(v * v for v in self._after_backward.values()) ** 0.5,
            grad_norms=at_step,
            grad_abs_mean=sum(abs_sums.values()) / numel if abs_sums and numel else None,
            grad_abs_means={n: v / sizes[n] for n, v in abs_sums.items() if sizes[n]} if self.ratios else {},
            grad_abs_maxes={n: v for n, v in maxes.items() if sizes[n]}))
        self._after_backward = {}
        self._event("S")
        self.since_step = []

    def _step_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        record = self.steps[-1]
        nonzero: set[str] = set()
        for p in self.opt_params():
            name = self.name(p)
            grad = p.grad
            if grad is None:
                self.snapshots.pop(name, None)
                continue
            seen = self._at_step.get(name)
            value = seen.norm if seen is not None and seen.still(grad) else _scalar(grad)
            if value != 0.0 or bool(values(grad).any()):  # NaN counts as nonzero, as in `Tensor.any`
                nonzero.add(name)
                self.snapshots[name] = _GradSeen(grad, grad._version, value)
            else:
                self.snapshots.pop(name, None)
        self._at_step = {}
        if self._before is not None:
            params, before = self._before
            self._before = None
            moved = differences(params, before)
            for p, value in zip(params, norms(moved, math.inf)):
                self.pending.want(value, record.update_max, self.name(p))
            if self.ratios:
                for p, change, size in zip(params, norms(moved), norms(before)):
                    self.pending.want(change / size.clamp_min(1e-12), record.update_ratio, self.name(p))
        if record.index < self.watch_params:
            params = [p for p in self.opt_params() if p.layout == torch.strided]
            record.params_finite = True  # until the read-back says otherwise
            for p, value in zip(params, norms(params, math.inf)):
                self.pending.want(value, record.param_max, self.name(p))
        self._unfinished.append((record, nonzero))

    # -- callbacks from the loss and clip wrappers ------------------------------------------
    def on_loss(self, kind: str, args: tuple, kwargs: dict, out: Any) -> None:
        """Record one functional loss call (its value is read with the step's other values)."""
        inp = args[0] if args else kwargs["input"]
        target = args[1] if len(args) > 1 else kwargs.get("target")
        if not isinstance(inp, torch.Tensor):
            return
        kept = sum(c.input is not None for c in self.losses)
        keep = (not self.steps or self.phase != "step") and kept < KEEP_LOSS_TENSORS
        options = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor) and k not in ("input", "target")}
        if len(args) > 2:
            options["positional"] = len(args) - 2  # weight/reduction given by position: not interpreted
        weighted = any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k not in ("input", "target")) or \
            any(isinstance(a, torch.Tensor) for a in args[2:])
        call = LossCall(kind, inp.detach() if keep else None,
                        target.detach() if keep and isinstance(target, torch.Tensor) else None,
                        provenance(inp), None, self.phase, len(self.steps), options, weighted)
        self.losses.append(call)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            self.pending.want(out.detach().reshape(()), call.__dict__, "value", source=out)

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

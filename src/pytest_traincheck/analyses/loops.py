"""A structural view of training loops, shared by the optimizer-loop rules (TRN101-106, TRN305).

The rules need to answer "does this loop clear the gradients of the optimizer
it steps?", "does ``step()`` come before ``backward()`` in one iteration?",
"which model does this loop train?". ``FileLoops`` records, during the single
traversal, a tree of blocks (module, functions, classes, loops, ``if``/``else``
branches, ``with``/``try`` blocks) holding the events the rules care about, in
source order:

* ``backward``: ``loss.backward()``, ``torch.autograd.backward(loss)``,
  ``scaler.scale(loss).backward()``, ``accelerator.backward(loss)``,
  ``fabric.backward(loss)``, ``self.manual_backward(loss)``;
* ``step``: ``opt.step()`` / ``opt.step(closure)`` on an optimizer-like name,
  ``scaler.step(opt)``;
* ``clear``: ``opt.zero_grad()``, ``model.zero_grad()``, ``p.grad = None``,
  ``p.grad.zero_()``, calls named like ``zero_grads``/``_clear_grad``/``optimizer_zero_grad``;
* ``clip``: ``clip_grad_norm_``/``clip_grad_value_``/``clip_gradients`` (exact),
  or anything clipping-like (``clip`` in a call name, ``p.grad.clamp_``);
* ``call``: a call of a plain name or ``self.<name>`` (helpers, models);
* ``assign``: a name bound (with the grad mode in force there);
* ``accum``: ``total += x``, ``total = total + x``, ``items.append(x)``.

Analysis happens after the traversal (the rules report from ``leave_Module``):
helper functions of the same file called in a loop are inlined (depth 3), so a
loop that calls ``train_step()`` sees that function's ``backward`` and ``step``.

``FileLoops`` is an ``Analysis``: the engine walks one per file ahead of
every rule deriving from ``LoopRule``, so seven loop rules cost one recording.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

import libcst as cst

from pytest_traincheck.lint.rule import Analysis, Rule, call_name, dotted_name, get_arg, param_names, receiver
from pytest_traincheck.lint.context import FileContext
from pytest_traincheck.analyses.torch_vocabulary import (
    grad_mode_of_all,
    is_optimizer_class,
    is_scheduler_like,
    last_name,
    optimizer_like,
    scaler_like,
)

INLINE_DEPTH = 3
_BACKWARD_OWNERS = re.compile(r"accelerator|fabric|engine|deepspeed", re.IGNORECASE)
_CLEAR_HELPER = re.compile(r"(zero|clear|reset)_?grad", re.IGNORECASE)
CLIP_EXACT = frozenset({"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grad_value", "clip_gradients"})
_GRAD_INPLACE_CLEAR = frozenset({"zero_", "detach_"})
_GRAD_INPLACE_CLAMP = frozenset({"clamp_", "clamp", "clip_", "clip"})


@dataclass(eq=False)
class Scope:
    """A block of the file: its kind, node, parent and items (events and child blocks) in order."""

    kind: str  # module / def / class / loop / if / else / with / try / except / finally
    node: cst.CSTNode
    parent: Optional["Scope"]
    items: list[Union["Scope", "Event"]] = field(default_factory=list)
    grad: Optional[str] = None  # "off" / "on" where the block sets the grad mode
    name: str = ""
    params: list[str] = field(default_factory=list)
    defs: dict[str, "Scope"] = field(default_factory=dict)
    targets: frozenset[str] = frozenset()  # a loop's target names

    def ancestors(self) -> Iterator["Scope"]:
        """Yield this scope and its parents, innermost first."""
        scope: Optional[Scope] = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def function(self) -> "Scope":
        """Return the innermost def (or the module) holding this block."""
        for scope in self.ancestors():
            if scope.kind in ("def", "module"):
                return scope
        raise AssertionError("a scope chain always ends at the module")

    def inside(self, other: "Scope") -> bool:
        """True if this block is ``other`` or nested in it."""
        return any(scope is other for scope in self.ancestors())


@dataclass(eq=False)
class Event:
    """One thing a loop rule cares about, where it happens and in which order."""

    kind: str
    node: cst.CSTNode
    scope: Scope
    seq: int
    name: Optional[str] = None  # optimizer / clear target / callee / bound name / accumulator
    expr: Optional[cst.BaseExpression] = None  # backward target / assigned or accumulated value
    closure: bool = False  # a step given a closure
    exact: bool = False  # a clip call of torch's own clipping functions (not max_norm=inf)


Item = Union[Scope, Event]


class FileLoops(Analysis):
    """The events and blocks of one file, recorded in source order during the traversal."""

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.reset(None)

    def reset(self, module: Optional[cst.CSTNode]) -> None:
        """Start over for a new traversal."""
        self.root = Scope("module", module or cst.Module([]), None)
        self.stack: list[Scope] = [self.root]
        self.events: list[Event] = []
        self.loops: list[Scope] = []
        self.hooks = False  # the file registers gradient hooks (may clip there)
        self.optimizer_names: set[str] = set()  # last names bound to torch.optim constructors
        self._cache: dict[object, object] = {}

    # -- recording ---------------------------------------------------------------
    @property
    def scope(self) -> Scope:
        return self.stack[-1]

    # -- traversal events --------------------------------------------------------------
    def visit_Module(self, node: cst.Module) -> None:
        self.reset(node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.enter_def(node)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        owner = next(s for s in self.scope.ancestors() if s.kind in ("def", "module", "class"))
        owner.defs.setdefault(node.name.value, self.push("class", node, name=node.name.value))

    def visit_For(self, node: cst.For) -> None:
        self.enter_loop(node)

    def visit_While(self, node: cst.While) -> None:
        self.enter_loop(node)

    def visit_If(self, node: cst.If) -> None:
        self.push("if", node)

    def visit_Else(self, node: cst.Else) -> None:
        self.push("else", node)

    def visit_With(self, node: cst.With) -> None:
        self.enter_with(node)

    def visit_Try(self, node: cst.Try) -> None:
        self.push("try", node)

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        self.push("except", node)

    def visit_Finally(self, node: cst.Finally) -> None:
        self.push("finally", node)

    def _close(self, original_node: cst.CSTNode) -> None:
        self.pop()

    # Every block the visit_* methods above open closes the same way.
    leave_FunctionDef = leave_ClassDef = leave_For = leave_While = leave_If = leave_Else = _close
    leave_With = leave_Try = leave_ExceptHandler = leave_Finally = _close

    def visit_Call(self, node: cst.Call) -> None:
        self.on_call(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        self.on_assign(node, [t.target for t in node.targets], node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self.on_assign(node, [node.target], node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        augmented = isinstance(node.operator, cst.AddAssign)
        self.on_assign(node, [node.target], node.value if augmented else None, augmented=True)

    def push(self, kind: str, node: cst.CSTNode, **kwargs: object) -> Scope:
        scope = Scope(kind, node, self.scope, **kwargs)  # type: ignore[arg-type]
        self.scope.items.append(scope)
        self.stack.append(scope)
        if kind == "loop":
            self.loops.append(scope)
        return scope

    def pop(self) -> None:
        if len(self.stack) > 1:
            self.stack.pop()

    def add(self, kind: str, node: cst.CSTNode, **kwargs: object) -> Event:
        event = Event(kind, node, self.scope, len(self.events), **kwargs)  # type: ignore[arg-type]
        self.scope.items.append(event)
        self.events.append(event)
        return event

    def enter_def(self, node: cst.FunctionDef) -> None:
        params = param_names(node.params, stars=False)
        grad = grad_mode_of_all(self.context, (d.decorator for d in node.decorators))
        owner = next(s for s in self.scope.ancestors() if s.kind in ("def", "module", "class"))
        scope = self.push("def", node, grad=grad, name=node.name.value, params=params)
        owner.defs.setdefault(node.name.value, scope)

    def enter_loop(self, node: Union[cst.For, cst.While]) -> None:
        targets: frozenset[str] = frozenset()
        if isinstance(node, cst.For):
            targets = frozenset(_names_in(node.target))
            for name in sorted(targets):
                self.add("assign", node, name=name)
        self.push("loop", node, targets=targets)

    def enter_with(self, node: cst.With) -> None:
        self.push("with", node, grad=grad_mode_of_all(self.context, (item.item for item in node.items)))

    def on_call(self, node: cst.Call) -> None:
        name = call_name(node)
        if name is None:
            return
        recv = receiver(node)
        recv_name = dotted_name(recv)
        if name == "backward":
            self._on_backward(node, recv, recv_name)
        elif name == "manual_backward" and node.args:
            self.add("backward", node, expr=node.args[0].value)
        elif name == "step" and recv_name is not None:
            self._on_step(node, recv_name)
        elif name == "zero_grad" or ("rad" in name and _CLEAR_HELPER.search(name)):
            self.add("clear", node, name=self._clear_target(recv_name) if name == "zero_grad" else None)
        elif name in _GRAD_INPLACE_CLEAR and _holds_grad(recv):
            self.add("clear", node)
        elif name in CLIP_EXACT:
            self.add("clip", node, exact=not _unbounded(node))
        elif name in _GRAD_INPLACE_CLAMP and _holds_grad(recv):
            self.add("clip", node)  # p.grad.clamp_(-1, 1)
        elif "clip" in name.lower() and name not in _GRAD_INPLACE_CLAMP:  # torch.clip(x), x.clip_() are not
            self.add("clip", node)
        elif name == "register_hook":
            self.hooks = True
        elif name == "append" and recv_name is not None and node.args and not node.args[0].star:
            self.add("accum", node, name=recv_name, expr=node.args[0].value)
        else:
            func = dotted_name(node.func)
            if func is not None and (isinstance(node.func, cst.Name) or func.startswith("self.")):
                self.add("call", node, name=func)
                if name in _GRAD_INPLACE_CLAMP and isinstance(node.func, cst.Name):
                    self.add("clip", node)  # a project's own ``clip(model)``: may clip the gradients

    def _on_backward(self, node: cst.Call, recv: Optional[cst.BaseExpression], recv_name: Optional[str]) -> None:
        if self.context.qualname(node.func) == "torch.autograd.backward":
            arg = get_arg(node, "tensors", 0)
            if arg is not None:
                self.add("backward", node, expr=arg.value)
            return
        if recv is None:
            return  # a local ``backward(...)`` function: unknown
        if isinstance(recv, cst.Call) and call_name(recv) == "super":
            return
        if recv_name is not None and _BACKWARD_OWNERS.search(last_name(recv_name) or "") and node.args:
            self.add("backward", node, expr=node.args[0].value)
            return
        if recv_name is not None and _function_class_call(last_name(recv_name) or "", node):
            return  # SomeFunction.backward(ctx, grad): an autograd.Function's method, not a loss
        if isinstance(recv, cst.Call) and call_name(recv) == "scale" and recv.args:
            recv = recv.args[0].value  # scaler.scale(loss).backward()
        self.add("backward", node, expr=recv)

    def _on_step(self, node: cst.Call, recv_name: str) -> None:
        short = last_name(recv_name) or ""
        if scaler_like(short):
            arg = get_arg(node, "optimizer", 0)
            opt = dotted_name(arg.value) if arg is not None else None
            self.add("step", node, name=self._param_free(opt) if opt else "*", closure=len(node.args) > 1)
        elif not is_scheduler_like(short):
            name = self._param_free(recv_name) if optimizer_like(recv_name) else recv_name
            self.add("step", node, name=name, closure=bool(node.args))

    def _clear_target(self, recv_name: Optional[str]) -> str:
        """Return the optimizer a ``zero_grad`` clears, or "*" for a module (or anything unsure)."""
        if recv_name is None or not optimizer_like(recv_name):
            return "*"
        return self._param_free(recv_name)

    def _param_free(self, name: str) -> str:
        """Return ``name``, or "*" if it is a loop target (``for opt in opts``)."""
        head = name.split(".", 1)[0]
        if any(head in s.targets for s in self.scope.ancestors() if s.kind == "loop"):
            return "*"
        return name

    def on_assign(self, node: cst.CSTNode, targets: list[cst.BaseExpression], value: Optional[cst.BaseExpression],
                  augmented: bool = False) -> None:
        for target in targets:
            if isinstance(target, cst.Attribute) and target.attr.value == "grad" and _is_name(value, "None"):
                self.add("clear", node)
                continue
            name = dotted_name(target)
            if name is not None:
                self.add("assign", node, name=name, expr=None if augmented else value)
                if not augmented and isinstance(value, cst.Call) and optimizer_ctor(self.context, value):
                    self.optimizer_names.add(last_name(name) or name)
            else:
                for bound in _names_in(target):
                    self.add("assign", node, name=bound)
        if len(targets) == 1 and value is not None:
            name = dotted_name(targets[0])
            if name is not None and (augmented or _self_sum(name, value)):
                self.add("accum", node, name=name, expr=value)

    # -- queries -------------------------------------------------------------------
    def is_optimizer(self, name: Optional[str]) -> bool:
        """True for "*" and names that look like optimizers or hold a torch.optim constructor."""
        return name == "*" or optimizer_like(name) or last_name(name) in self.optimizer_names

    def helper(self, event: Event) -> Optional[Scope]:
        """Return the same-file function a ``call`` event (or a step's closure) runs, if any."""
        name = event.name or ""
        if name.startswith("self."):
            method = name[5:]
            if "." in method:
                return None
            cls = next((s for s in event.scope.ancestors() if s.kind == "class"), None)
            return cls.defs.get(method) if cls is not None else None
        for scope in event.scope.ancestors():
            if scope.kind in ("def", "module") and name in scope.defs:
                return scope.defs[name]
        return None

    def walk(self, scope: Scope, depth: int = 0, seen: Optional[set[int]] = None) -> list[Event]:
        """Return the events of ``scope`` in order, same-file helpers inlined where they are called.

        Functions defined inside ``scope`` count only where they are called (or passed to ``step``).
        """
        key = ("walk", id(scope), depth)
        if depth == 0 and key in self._cache:
            return self._cache[key]  # type: ignore[return-value]
        seen = seen or set()
        out: list[Event] = []
        for item in scope.items:
            if isinstance(item, Scope):
                if item.kind not in ("def", "class"):
                    out.extend(self.walk(item, depth, seen))
                continue
            if self.is_step(item) and item.closure and isinstance(item.node, cst.Call):
                closure = item.node.args[0].value if item.node.args else None
                out.extend(self._inline(Event("call", item.node, item.scope, item.seq, dotted_name(closure)),
                                        depth, seen))
            out.append(item)
            if item.kind == "call":
                out.extend(self._inline(item, depth, seen))
        if depth == 0:
            self._cache[key] = out
        return out

    def _inline(self, event: Event, depth: int, seen: set[int]) -> list[Event]:
        target = self.helper(event) if event.name else None
        if target is None or depth >= INLINE_DEPTH or id(target) in seen:
            return []
        return self.walk(target, depth + 1, seen | {id(target)})

    def item_events(self, item: Item) -> list[Event]:
        """The events one item of a block runs: a child block's, a helper's, or the event itself."""
        if isinstance(item, Scope):
            return [] if item.kind in ("def", "class") else self.walk(item)
        if item.kind == "call":
            return [item, *self._inline(item, 0, set())]
        return [item]

    def loops_within(self, loop: Scope) -> list[Scope]:
        """Loops nested in ``loop``, directly or in helper functions it calls."""
        found = []
        for event in self.walk(loop):
            for scope in event.scope.ancestors():
                if scope is loop:
                    break
                if scope.kind == "loop" and scope not in found:
                    found.append(scope)
        return found

    def training_loops(self) -> list[tuple[Scope, list[Event]]]:
        """Innermost loops that call ``backward`` and step an optimizer, with their events."""
        if "train" in self._cache:
            return self._cache["train"]  # type: ignore[return-value]
        candidates = {}
        for loop in self.loops:
            events = self.walk(loop)
            if any(e.kind == "backward" for e in events) and any(self.is_step(e) for e in events):
                candidates[id(loop)] = (loop, events)
        result = [
            (loop, events) for loop, events in candidates.values()
            if not any(id(inner) in candidates for inner in self.loops_within(loop))
        ]
        self._cache["train"] = result
        return result

    def is_step(self, event: Event) -> bool:
        """True for an optimizer step event."""
        return event.kind == "step" and self.is_optimizer(event.name)

    def opt_key(self, event: Event, loop: Scope) -> str:
        """The optimizer an event concerns, by last name; "*" if unknown or a helper's parameter."""
        name = event.name or "*"
        if name == "*":
            return "*"
        head = name.split(".", 1)[0]
        func = event.scope.function()
        if head not in ("self", "cls") and head in func.params and func is not loop.function():
            return "*"
        return last_name(name) or "*"

    def clears(self, clear: Event, step: Event, loop: Scope) -> bool:
        """True if the ``clear`` event clears the gradients that ``step`` applies."""
        target = self.opt_key(clear, loop)
        if target == "*" or not self.is_optimizer(clear.name):
            return not self._other_models(clear, step, loop)
        stepped = self.opt_key(step, loop)
        return stepped == "*" or target == stepped or self._aliases(target, stepped)

    def _other_models(self, clear: Event, step: Event, loop: Scope) -> bool:
        """True if ``module.zero_grad()`` provably clears another optimizer's model, not ``step``'s (GANs)."""
        if not isinstance(clear.node, cst.Call) or call_name(clear.node) != "zero_grad":
            return False
        module = last_name(dotted_name(receiver(clear.node)))
        if module is None:
            return False
        mine = optimizer_models(self, step, loop)
        if mine is None or module in {last_name(m) for m in mine}:
            return False
        for other in self.events:
            if self.is_step(other) and self.opt_key(other, loop) != self.opt_key(step, loop):
                theirs = optimizer_models(self, other, loop) or []
                if module in {last_name(m) for m in theirs}:
                    return True
        return False

    def _aliases(self, first: str, second: str) -> bool:
        """True if the file assigns one optimizer name to the other (``opt = self.optimizer``)."""
        pairs = self._cache.get("aliases")
        if pairs is None:
            pairs = self._cache["aliases"] = {
                frozenset({last_name(e.name), last_name(dotted_name(e.expr))})
                for e in self.events if e.kind == "assign" and isinstance(e.expr, (cst.Name, cst.Attribute))
            }
        return frozenset({first, second}) in pairs  # type: ignore[operator]

    def by_function(self, kind: str) -> dict[int, list[Event]]:
        """Events of ``kind`` grouped by the id of their function (or module) block."""
        key = ("by_function", kind)
        found = self._cache.get(key)
        if found is None:
            found = {}
            for event in self.events:
                if event.kind == kind:
                    found.setdefault(id(event.scope.function()), []).append(event)
            self._cache[key] = found
        return found  # type: ignore[return-value]

    def grad_mode(self, scope: Scope) -> str:
        """The grad mode in force in ``scope``: "off", "on" or "unknown" (a function body starts "on")."""
        for block in scope.ancestors():
            if block.kind == "with" and block.grad is not None:
                return block.grad
            if block.kind in ("def", "module"):
                return block.grad or "on"
        return "on"

    def bindings(self, name: str, where: Scope) -> list[Event]:
        """Assignments to ``name`` visible from ``where``: its function, else its class, else the module."""
        assigns = self.by_function("assign")
        func = where.function()
        found = [e for e in assigns.get(id(func), []) if e.name == name]
        if found:
            return found
        if func.kind == "def" and name.split(".", 1)[0] in func.params and not name.startswith("self."):
            return []  # a parameter shadows the module's bindings
        if name.startswith("self."):
            cls = next((s for s in where.ancestors() if s.kind == "class"), None)
            if cls is None:
                return []
            return [e for events in assigns.values() for e in events if e.name == name and e.scope.inside(cls)]
        return [e for e in assigns.get(id(self.root), []) if e.name == name]

    def call_sites(self, func: Scope) -> list[Event]:
        """Calls of the same-file function ``func``."""
        index = self._cache.get("call_sites")
        if index is None:
            index = {}
            for event in self.events:
                if event.kind == "call":
                    target = self.helper(event)
                    if target is not None:
                        index.setdefault(id(target), []).append(event)
            self._cache["call_sites"] = index
        return index.get(id(func), [])  # type: ignore[union-attr]


class LoopRule(Rule):
    """A rule reading the file's ``FileLoops`` (``self.loops``); it reports in ``check``, once the file is walked."""

    TRIGGERS = ("backward",)
    ANALYSES = (FileLoops,)

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.loops = context.shared(FileLoops)

    def check(self) -> None:  # pragma: no cover - overridden
        """Report this rule's findings from ``self.loops``."""

    def leave_Module(self, original_node: cst.Module) -> None:
        self.check()


# -- pure helpers ------------------------------------------------------------------------


def _is_name(node: Optional[cst.CSTNode], value: str) -> bool:
    return isinstance(node, cst.Name) and node.value == value


def _names_in(target: cst.BaseExpression) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for element in target.elements for n in _names_in(element.value)]
    if isinstance(target, cst.StarredElement):
        return _names_in(target.value)
    return []


def _holds_grad(node: Optional[cst.BaseExpression]) -> bool:
    """True for ``p.grad`` or ``p.grad.data``."""
    if isinstance(node, cst.Attribute) and node.attr.value == "data":
        node = node.value
    return isinstance(node, cst.Attribute) and node.attr.value == "grad"


def _unbounded(node: cst.Call) -> bool:
    """True for ``clip_grad_norm_(params, float('inf'))``: computing the norm, not clipping."""
    arg = get_arg(node, "max_norm", 1)
    if arg is None:
        return False
    value = arg.value
    if isinstance(value, cst.Call) and _is_name(value.func, "float") and value.args:
        inner = value.args[0].value
        return isinstance(inner, cst.SimpleString) and "inf" in inner.value.lower()
    return isinstance(value, cst.Attribute) and value.attr.value == "inf"


def _self_sum(name: str, value: cst.BaseExpression) -> bool:
    """True for ``total = total + x`` (either side)."""
    return (
        isinstance(value, cst.BinaryOperation)
        and isinstance(value.operator, cst.Add)
        and name in (dotted_name(value.left), dotted_name(value.right))
    )


def optimizer_ctor(context: FileContext, value: Optional[cst.BaseExpression]) -> bool:
    """True for ``torch.optim.Adam(...)`` however it was imported."""
    return isinstance(value, cst.Call) and is_optimizer_class(context.qualname(value.func))


def parameter_owners(expr: cst.CSTNode) -> list[str]:
    """Names ``m`` of every ``m.parameters()`` / ``m.named_parameters()`` inside ``expr``."""
    found: list[str] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Call) and call_name(node) in ("parameters", "named_parameters"):
            owner = dotted_name(receiver(node))
            if owner is not None:
                found.append(owner)
                continue
        stack.extend(node.children)
    return found


def bare_names(expr: cst.CSTNode) -> list[str]:
    """Names and dotted names used in ``expr`` as tensors; ``x.item()``, ``float(x)``, ``x.data``... are skipped."""
    found: list[str] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Call):
            name = call_name(node)
            if isinstance(node.func, cst.Attribute) and name in ("item", "detach", "tolist", "numpy", "detach_"):
                continue
            if isinstance(node.func, cst.Name) and name in ("float", "int", "len", "str", "bool"):
                continue
        if isinstance(node, cst.Attribute):
            if node.attr.value in ("data", "shape", "dtype", "device", "grad"):
                continue
            dotted = dotted_name(node)
            if dotted is not None:
                found.append(dotted)  # ``self.losses`` as a whole, then its parts
            stack.append(node.value)  # the object, not the attribute's name
            continue
        if isinstance(node, cst.Name):
            found.append(node.value)
            continue
        stack.extend(node.children)
    return found


def optimizer_models(loops: FileLoops, step: Event, where: Optional[Scope] = None) -> Optional[list[str]]:
    """Names of the modules whose parameters ``step``'s optimizer was built from; None if unknown."""
    found = optimizer_bindings(loops, step, where)
    return [name for name, _ in found] or None


def optimizer_bindings(loops: FileLoops, step: Event, where: Optional[Scope] = None) -> list[tuple[str, Scope]]:
    """``(model name, block of the optimizer's construction)`` for ``optim.X(model.parameters())``."""
    if not step.name or step.name == "*":
        return []
    owners: list[tuple[str, Scope]] = []
    for scope in (step.scope, where) if where is not None else (step.scope,):
        for binding in loops.bindings(step.name, scope):
            value = binding.expr
            if isinstance(value, cst.Call) and optimizer_ctor(loops.context, value):
                arg = get_arg(value, "params", 0)
                if arg is None:
                    continue
                owners.extend((name, binding.scope) for name in parameter_owners(arg.value))
                if not owners and isinstance(arg.value, cst.Name):
                    # params = list(encoder.parameters()) + list(decoder.parameters()); optim.Adam(params)
                    for collected in loops.bindings(arg.value.value, binding.scope):
                        if collected.expr is not None:
                            owners.extend((name, binding.scope) for name in parameter_owners(collected.expr))
        if owners:
            break
    return owners


def _function_class_call(name: str, call: cst.Call) -> bool:
    """Return True for ``MyFunction.backward(ctx, grad)``: a CamelCase class called with positional arguments.

    Capitalised loss variables (``D_loss.backward()``, ``L.backward(retain_graph=True)``) are losses.
    """
    camel = name[:1].isupper() and "_" not in name and any(c.islower() for c in name)
    return camel and bool(call.args) and call.args[0].keyword is None

"""A small, flow-sensitive view of what names hold, shared by the model/loss rules (TRN2xx).

The rules need to answer "what produced this tensor?" (a softmax, an
``nn.Linear``, the model ``Net``) and "what does this name hold?" (an
``nn.CrossEntropyLoss``, an ``nn.Sequential`` ending in ``nn.Softmax``).
``Tracker`` keeps that as the single traversal walks the file in source order:
plain names per function scope, ``self.<attr>`` per class, each bound to an
abstract ``Value`` (or None: unknown). It is deliberately simple:

* a binding is evaluated once, when its assignment ends, against the bindings
  seen so far (``x = self.bn(x)`` reads the previous ``x``);
* a name rebound inside an ``if`` to something else is unknown after the
  ``if`` (either branch may have run); loops are not iterated;
* loop targets, ``with ... as`` names, unpacked tuples and the parameters of
  methods and nested functions are unknown; a parameter of a module-level
  function is ``param`` (``<func>:<index>:<name>``), settled by the project
  pass against what every call of the function passes (``ProjectFacts.param_holds``).

``Tracker`` is an ``Analysis``: the engine walks one per file ahead of every
rule deriving from ``FlowRule``, which read it.
"""

from __future__ import annotations

import builtins
import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Optional

import libcst as cst

from pytest_traincheck.lint.project import FileFacts
from pytest_traincheck.lint.rule import Analysis, Rule, dotted_name, get_arg, is_false, param_names, self_attr
from pytest_traincheck.lint.context import FileContext
from pytest_traincheck.analyses.torch_vocabulary import (
    ACTIVATION_FUNCS,
    ACTIVATION_METHODS,
    ACTIVATION_MODULES,
    BIAS_POSITION,
    PASSTHROUGH_METHODS,
    WRAPPERS,
    is_module_subclass_base,
    sequential_layers,
)

_BUILTINS = frozenset(dir(builtins))


class Value(NamedTuple):
    """What an expression evaluates to, abstractly.

    kind: ``act`` (a tensor out of softmax/log_softmax/sigmoid: ``detail``),
    ``out`` (a tensor out of the torch layer ``detail``, built at ``node``),
    ``model_out`` (a tensor out of the user class ``detail``), ``module`` (an
    instance of the torch class ``detail``, built at ``node``), ``seq`` (an
    ``nn.Sequential`` whose last layer is ``detail``, "" if unknown),
    ``instance`` (an instance of the user class ``detail``), ``param`` (what the
    caller passes as the parameter ``detail``, ``<func>:<index>:<name>``),
    ``param_out`` (what calling that parameter returns), ``model_item`` (element
    ``<index>`` of the tuple a user model returns: ``<class>#<index>``) and
    ``func`` (a name bound to a function: ``loss_fn = my_loss``, ``detail`` its
    qualified name).
    """

    kind: str
    detail: str = ""
    node: Optional[cst.CSTNode] = None

    def same(self, other: Optional["Value"]) -> bool:
        """Equal in kind and detail (nodes are compared by identity elsewhere)."""
        return other is not None and (self.kind, self.detail) == (other.kind, other.detail)


class ClassInfo:
    """What the tracker learnt about one class definition."""

    def __init__(self, name: str, is_module: bool) -> None:
        self.name = name
        self.is_module = is_module
        self.attrs: dict[str, Optional[Value]] = {}
        self.returns: list[Optional[Value]] = []  # values returned by forward


_Key = tuple[str, str]  # ("n", name) or ("a", attr)


class Tracker(Analysis):
    """The bindings of one file, updated in source order."""

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        # each scope: (bindings, is_class_body)
        self.scopes: list[tuple[dict[str, Optional[Value]], bool]] = [({}, False)]
        self.classes: list[ClassInfo] = []
        self.functions: list[tuple[str, Optional[ClassInfo]]] = []  # (name, class if a method)
        self.file_classes: dict[str, ClassInfo] = {}
        self.ifs: list[dict[_Key, Optional[Value]]] = []
        self.module_functions: list[str] = []
        self.built: dict[str, list[Optional[Value]]] = {}  # module-level function -> what its returns hold
        self._top: list[bool] = []  # per open function: defined at module level

    # -- scope queries -----------------------------------------------------------
    def current_class(self) -> Optional[ClassInfo]:
        """The class whose method (or nested function of one) is being walked."""
        for _, owner in reversed(self.functions):
            if owner is not None:
                return owner
        return None

    def in_method(self, name: str) -> Optional[ClassInfo]:
        """The class if the innermost function is its method ``name``."""
        if self.functions and self.functions[-1][0] == name:
            return self.functions[-1][1]
        return None

    def is_module_class(self, bases: list[cst.Arg]) -> bool:
        """True if a base is nn.Module, a torch.nn module class, or a module class of this file."""
        for arg in bases:
            qual = self.context.qualname(arg.value)
            if is_module_subclass_base(qual):
                return True
            if qual and qual.startswith("torch.nn.") and qual.rsplit(".", 1)[1] in nn_module_classes():
                return True
            name = dotted_name(arg.value)
            if name in self.file_classes and self.file_classes[name].is_module:
                return True
        return False

    def lookup(self, name: str) -> Optional[Value]:
        for index in range(len(self.scopes) - 1, -1, -1):
            bindings, is_class = self.scopes[index]
            if is_class and index != len(self.scopes) - 1:
                continue  # a class body is not visible from its methods
            if name in bindings:
                return bindings[name]
        return None

    def bound(self, name: str) -> bool:
        return any(name in bindings for bindings, _ in self.scopes)

    # -- evaluation --------------------------------------------------------------
    def evaluate(self, expr: Optional[cst.BaseExpression]) -> Optional[Value]:
        """Return what ``expr`` holds, or None if unknown."""
        if isinstance(expr, cst.Name):
            return self.lookup(expr.value)
        attr = self_attr(expr)
        if attr is not None:
            owner = self.current_class()
            return owner.attrs.get(attr) if owner else None
        if isinstance(expr, cst.Call):
            return self._call(expr)
        return None

    def _call(self, call: cst.Call) -> Optional[Value]:
        func = call.func
        qual = self.context.qualname(func)
        if qual is not None:
            return self._qualified_call(qual, call)
        owner = self.current_class()
        if isinstance(func, cst.Name) and func.value == "self" and owner is not None:
            return Value("model_out", owner.name)
        if isinstance(func, cst.Attribute) and self_attr(func) is None:
            method = func.attr.value
            if method in ACTIVATION_METHODS:
                return Value("act", ACTIVATION_METHODS[method])
            if method in PASSTHROUGH_METHODS:
                return self.evaluate(func.value)
            if method == "forward":
                return apply(self.evaluate(func.value))
            return None
        if isinstance(func, cst.Name) and func.value[:1].isupper() and not self.bound(func.value):
            return Value("instance", func.value)  # Net(): a class of this file (or unknown)
        if isinstance(func, cst.Name) and not self.bound(func.value) and func.value in self.built:
            return self._builder(func.value)
        return apply(self.evaluate(func))

    def _function(self, name: str) -> Optional[Value]:
        """``func`` for a module-level function of this file or a function imported from the project."""
        if self.bound(name):
            return None
        qual = self.context.qualname(cst.Name(name))
        if qual is not None:
            last = qual.rsplit(".", 1)[-1]
            return Value("func", qual) if "." in qual and not qual.startswith("torch.") and last[:1].islower() \
                else None
        return Value("func", name) if name in self.module_functions else None

    def _builder(self, name: str) -> Optional[Value]:
        """Return what the module-level function ``name`` builds, when every ``return`` of it agrees."""
        returned = self.built[name]
        first = returned[0]
        if first is None or first.kind not in ("seq", "module", "instance") or not all(first.same(r) for r in returned):
            return None
        return first

    def _qualified_call(self, qual: str, call: cst.Call) -> Optional[Value]:
        if qual in ACTIVATION_FUNCS:
            return Value("act", ACTIVATION_FUNCS[qual])
        if qual == "torch.nn.Sequential":
            return Value("seq", self.sequential_last(call), call)
        if qual in WRAPPERS:
            first = get_arg(call, "module", 0) or get_arg(call, "model", 0)
            return self.evaluate(first.value) if first else None
        last = qual.rsplit(".", 1)[-1]
        if not last[:1].isupper():
            return None
        if qual.startswith("torch."):
            return Value("module", qual, call)
        return Value("instance", qual)  # from model import Net; Net(): the project pass resolves the module

    def sequential_last(self, call: cst.Call) -> str:
        """Return the qualified name of an ``nn.Sequential``'s last layer, or ""."""
        layers = sequential_layers(self.context, call)
        if not layers:
            return ""
        value = self.evaluate(layers[-1])
        if value is None:
            return ""
        if value.kind == "seq":
            return value.detail
        return value.detail if value.kind == "module" else ""

    # -- bindings ----------------------------------------------------------------
    def bind(self, target: cst.BaseExpression, value: Optional[Value]) -> None:
        """Record that ``target`` now holds ``value`` (unpacked targets become unknown)."""
        if isinstance(target, cst.Name):
            self._set(("n", target.value), value)
        elif self_attr(target) is not None:
            self._set(("a", self_attr(target) or ""), value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            unpacked = value is not None and value.kind == "model_out" \
                and not any(isinstance(e, cst.StarredElement) for e in target.elements)
            for index, element in enumerate(target.elements):  # probs, boxes = net(x)
                self.bind(element.value, Value("model_item", f"{value.detail}#{index}") if unpacked else None)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, None)

    def _get(self, key: _Key) -> Optional[Value]:
        if key[0] == "n":
            return self.scopes[-1][0].get(key[1])
        owner = self.current_class()
        return owner.attrs.get(key[1]) if owner else None

    def _set(self, key: _Key, value: Optional[Value]) -> None:
        if self.ifs and key not in self.ifs[-1]:
            self.ifs[-1][key] = self._get(key)
        if key[0] == "n":
            self.scopes[-1][0][key[1]] = value
        else:
            owner = self.current_class()
            if owner is not None:
                owner.attrs[key[1]] = value

    # -- traversal events ------------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(ClassInfo(node.name.value, self.is_module_class(list(node.bases))))
        self.scopes.append(({}, True))

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        info = self.classes.pop()
        self.scopes.pop()
        self.file_classes[info.name] = info
        self.scopes[-1][0].pop(info.name, None)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        owner = self.classes[-1] if self.classes and self.scopes[-1][1] else None
        top_level = len(self.scopes) == 1
        self._top.append(top_level)
        self.functions.append((node.name.value, owner))
        self.scopes.append(({name: None for name in param_names(node.params)}, False))
        if top_level:  # what its callers pass: settled by the project pass
            self.module_functions.append(node.name.value)
            for index, param in enumerate([*node.params.posonly_params, *node.params.params]):
                self.scopes[-1][0][param.name.value] = Value("param", f"{node.name.value}:{index}:{param.name.value}")
            for param in node.params.kwonly_params:
                self.scopes[-1][0][param.name.value] = Value("param", f"{node.name.value}:k:{param.name.value}")
        self.ifs.append({})  # bindings made in a function do not leak out through an enclosing if

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._top.pop()
        self.functions.pop()
        self.scopes.pop()
        self.ifs.pop()

    def visit_If(self, node: cst.If) -> None:
        self.ifs.append({})

    def leave_If(self, original_node: cst.If) -> None:
        changed = self.ifs.pop()
        parent = self.ifs[-1] if self.ifs else None
        for key, before in changed.items():
            if parent is not None and key not in parent:
                parent[key] = before
            now = self._get(key)
            if now is not None and not now.same(before):
                self._set(key, None)  # rebound in a branch: either value may reach what follows

    def leave_Assign(self, original_node: cst.Assign) -> None:
        value = self.evaluate(original_node.value)
        if value is None and isinstance(original_node.value, cst.Name):
            value = self._function(original_node.value.value)
        for target in original_node.targets:
            self.bind(target.target, value)

    def leave_AnnAssign(self, original_node: cst.AnnAssign) -> None:
        if original_node.value is not None:
            self.bind(original_node.target, self.evaluate(original_node.value))

    def leave_AugAssign(self, original_node: cst.AugAssign) -> None:
        self.bind(original_node.target, None)

    def visit_For(self, node: cst.For) -> None:
        self.bind(node.target, None)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self.bind(node.asname.name, None)

    def leave_Expr(self, original_node: cst.Expr) -> None:
        call = original_node.value
        if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute)
                and call.func.attr.value == "add_module"):
            return
        holder = self.evaluate(call.func.value)
        layer = get_arg(call, "module", 1)
        if holder is None or holder.kind != "seq" or layer is None:
            return
        added = self.evaluate(layer.value)  # seq.add_module("softmax", nn.Softmax(1)): the new last layer
        last = added.detail if added is not None and added.kind in ("module", "seq") else ""
        self.bind(call.func.value, Value("seq", last, holder.node))

    def visit_Return(self, node: cst.Return) -> None:
        if self._top and self._top[-1] and self.functions:
            returned = self.evaluate(node.value) if node.value is not None else None
            self.built.setdefault(self.functions[-1][0], []).append(returned)
        owner = self.in_method("forward")
        if owner is not None:
            owner.returns.append(self.evaluate(node.value) if node.value is not None else None)


def apply(callee: Optional[Value]) -> Optional[Value]:
    """Return what calling ``callee`` (a module, Sequential or model instance) produces."""
    if callee is None:
        return None
    if callee.kind == "module":
        if callee.detail in ACTIVATION_MODULES:
            return Value("act", ACTIVATION_MODULES[callee.detail])
        return Value("out", callee.detail, callee.node)
    if callee.kind == "seq":
        if callee.detail in ACTIVATION_MODULES:
            return Value("act", ACTIVATION_MODULES[callee.detail])
        return Value("out", callee.detail) if callee.detail else None
    if callee.kind == "instance":
        return Value("model_out", callee.detail)
    if callee.kind == "param":
        return Value("param_out", callee.detail)
    return None


class FlowRule(Rule):
    """A rule that reads the file's ``Tracker`` (``self.flow``).

    The tracker has seen each node before the rule's ``visit_*`` runs and has
    left it before the rule's ``leave_*`` runs (see ``Analysis``), so read it in
    ``visit_*``, and capture there what a ``leave_*`` needs.
    """

    ANALYSES = (Tracker,)

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.flow = context.shared(Tracker)


# -- helpers for the rules ------------------------------------------------------------


@lru_cache(maxsize=1)
def torch_names() -> dict[str, object]:
    """Return the shipped name list (``analyses/data/torch_names.json``)."""
    path = Path(__file__).with_name("data") / "torch_names.json"
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def nn_module_classes() -> frozenset[str]:
    """Names of the ``torch.nn`` classes that are ``nn.Module`` subclasses."""
    return frozenset(torch_names()["nn_module_classes"])  # type: ignore[arg-type]


def first_arg(call: cst.Call, keyword: str = "input") -> Optional[cst.Arg]:
    """Return the tensor argument of a function/loss call (``input=`` or first positional)."""
    return get_arg(call, keyword, 0)


def bias_enabled(call: cst.Call, qual: str) -> bool:
    """True if the layer built by ``call`` provably has a bias (default, or a literal True)."""
    if any(arg.star for arg in call.args):
        return False
    arg = get_arg(call, "bias", BIAS_POSITION.get(qual))
    return arg is None or (isinstance(arg.value, cst.Name) and arg.value.value == "True")


def _new_keyword(call: cst.Call, name: str, value: cst.BaseExpression) -> cst.Call:
    """Append ``name=value`` to the call's arguments, keeping a trailing comma's layout."""
    args = list(call.args)
    new = cst.Arg(value=value, keyword=cst.Name(name), equal=cst.AssignEqual(
        whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")))
    if not args:
        return call.with_changes(args=[new])
    last = args[-1]
    if isinstance(last.comma, cst.Comma):  # trailing comma: the new argument takes over the layout
        before = args[-2].comma if len(args) > 1 and isinstance(args[-2].comma, cst.Comma) else None
        new = new.with_changes(comma=last.comma)
        spacing = before.whitespace_after if before is not None else cst.SimpleWhitespace(" ")
        args[-1] = last.with_changes(comma=last.comma.with_changes(whitespace_after=spacing))
    else:
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    return call.with_changes(args=[*args, new])


def set_keyword(call: cst.Call, name: str, value: cst.BaseExpression, position: Optional[int]) -> cst.Call:
    """Set argument ``name`` (passed by keyword or at ``position``) to ``value``, adding it if absent."""
    existing = get_arg(call, name, position)
    if existing is None:
        return _new_keyword(call, name, value)
    args = [arg.with_changes(value=value) if arg is existing else arg for arg in call.args]
    return call.with_changes(args=args)


def loss_input(flow: Tracker, call: cst.Call, functions: frozenset[str], modules: frozenset[str]) -> Optional[cst.Arg]:
    """Return the prediction argument if ``call`` computes one of these losses, else None.

    ``functions`` are functional forms (``F.cross_entropy``); ``modules`` loss classes,
    matched when ``call`` calls an instance (``criterion(out, y)``, ``nn.CrossEntropyLoss()(out, y)``).
    """
    qual = flow.context.qualname(call.func)
    if qual is not None:
        if qual not in functions:
            return None
    else:
        callee = flow.evaluate(loss_object(call))
        if callee is None or callee.kind != "module" or callee.detail not in modules:
            return None
    return first_arg(call)


def loss_object(call: cst.Call) -> cst.BaseExpression:
    """Return what a loss call calls: ``criterion`` for ``criterion(...)`` and ``criterion.forward(...)``."""
    func = call.func
    if isinstance(func, cst.Attribute) and func.attr.value == "forward" and self_attr(func) is None:
        return func.value
    return func


def param_loss_input(flow: Tracker, call: cst.Call) -> Optional[tuple[str, cst.Arg]]:
    """Return (parameter, prediction argument) if ``call`` calls a parameter of a module-level function."""
    if flow.context.qualname(call.func) is not None:
        return None
    callee = flow.evaluate(loss_object(call))
    arg = first_arg(call)
    if callee is None or callee.kind != "param" or arg is None:
        return None
    return callee.detail, arg


def handed_to(flow: Tracker, call: cst.Call) -> Optional[tuple[str, str]]:
    """Return (user class, method) when ``call`` is ``model.<method>(...)`` on an instance, or ``Net(...)``."""
    func = call.func
    if isinstance(func, cst.Attribute) and self_attr(func) is None:
        owner = flow.evaluate(func.value)
        if owner is not None and owner.kind == "instance":
            return owner.detail, func.attr.value
        return None
    built = flow.evaluate(call) if isinstance(func, (cst.Name, cst.Attribute)) else None
    return (built.detail, "__init__") if built is not None and built.kind == "instance" else None


def slots(flow: Tracker, call: cst.Call) -> list[tuple[str, Optional[Value]]]:
    """Return (position or keyword, what it holds) for each argument of ``call``, up to a ``*args``."""
    found: list[tuple[str, Optional[Value]]] = []
    position = 0
    for arg in call.args:
        if arg.star:
            break
        if arg.keyword is not None:
            found.append((arg.keyword.value, flow.evaluate(arg.value)))
        else:
            found.append((str(position), flow.evaluate(arg.value)))
            position += 1
    return found


def describe(value: Optional[Value]) -> str:
    """Return what a call site passes, as the project pass reads it (``project.CallSite``)."""
    if value is None or value.kind not in ("instance", "seq", "module", "param", "act", "model_out", "model_item"):
        return "?"
    return f"{value.kind}:{value.detail}"


class CallSites(cst.BatchableCSTVisitor):
    """Record the calls of the file by name (``train(model)``, ``train.run(model)``) for the project pass.

    Each call also carries two marks about the calling function (see ``project.CallSite``): whether it
    switched something to eval mode before the call, and whether it calls ``.train()`` anywhere.
    """

    def __init__(self, context: FileContext, facts: "FileFacts") -> None:
        super().__init__()
        self.context = context
        self.flow = context.shared(Tracker)
        self.facts = facts
        # per open function (the module body first): [switched to eval so far, calls .train(), its call sites]
        self.modes: list[list[object]] = [[False, False, []]]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.modes.append([False, False, []])

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._close(self.modes.pop())

    @staticmethod
    def _close(mode: list[object]) -> None:
        if mode[1]:
            for args in mode[2]:  # type: ignore[union-attr]
                args.append(["!train", "1"])

    def _mode_switch(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute) or self.context.qualname(func) is not None:
            return
        name = func.attr.value
        mode = get_arg(node, "mode", 0) if name == "train" else None
        if (name == "eval" and not node.args) or (mode is not None and is_false(mode.value)):
            self.modes[-1][0] = True
        elif name == "train" and len(node.args) <= 1:
            self.modes[-1][1] = True

    def visit_Call(self, node: cst.Call) -> None:
        self._mode_switch(node)
        written = dotted_name(node.func)
        if written is None:
            return
        qual = self.context.qualname(node.func) or ""
        alias = self.flow.lookup(written) if isinstance(node.func, cst.Name) else None
        if alias is not None and alias.kind == "func":  # loss_fn = my_loss; loss_fn(out, y)
            written = alias.detail.rsplit(".", 1)[-1]
            qual = alias.detail if "." in alias.detail else ""
        if ("." in written and not qual) or qual.startswith("torch.") or written.rsplit(".", 1)[-1][:1].isupper() \
                or (not qual and (written in _BUILTINS or self.flow.bound(written))):
            return  # a method of an object, torch's API, a class, a builtin or a variable: not a project function
        args: list[list[object]] = []
        position = 0
        for arg in node.args:
            if arg.star:
                args.append(["*", "?"])
            elif arg.keyword is not None:
                args.append([arg.keyword.value, self._describe(arg.value)])
            else:
                args.append([position, self._describe(arg.value)])
                position += 1
        if self.modes[-1][0]:
            args.append(["!eval", "1"])
        self.modes[-1][2].append(args)  # type: ignore[union-attr]
        self.facts.calls.append((written, qual, args))

    def _describe(self, value: cst.BaseExpression) -> str:
        if isinstance(value, cst.Name) and value.value == "self":
            owner = self.flow.current_class()
            if owner is not None and owner.is_module:
                return f"instance:{owner.name}"  # the model passes itself: evaluate_model(self, loader)
        return describe(self.flow.evaluate(value))

    def leave_Module(self, original_node: cst.Module) -> None:
        self._close(self.modes[0])
        self.facts.functions = list(dict.fromkeys(self.flow.module_functions))
        self.facts.stars = list(dict.fromkeys(self.context.star_imports))


def direct_activation_input(flow: Tracker, expr: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """Return ``x`` when ``expr`` itself applies an activation to ``x`` (``F.softmax(x, 1)``, ``x.softmax(1)``,
    ``nn.Softmax(1)(x)``), else None."""
    if not isinstance(expr, cst.Call):
        return None
    qual = flow.context.qualname(expr.func)
    if qual in ACTIVATION_FUNCS:
        arg = first_arg(expr)
        return arg.value if arg is not None else None
    if qual is None and isinstance(expr.func, cst.Attribute) and self_attr(expr.func) is None:
        return expr.func.value if expr.func.attr.value in ACTIVATION_METHODS else None
    callee = flow.evaluate(expr.func) if isinstance(expr.func, cst.Call) else None  # stateless: fixes run late
    if callee is not None and callee.kind == "module" and callee.detail in ACTIVATION_MODULES:
        arg = first_arg(expr)
        return arg.value if arg is not None else None
    return None


def replace_loss_input(call: cst.CSTNode, flow: Tracker) -> cst.CSTNode:
    """The fix of TRN201/TRN204: drop the activation applied inline to the loss's prediction."""
    assert isinstance(call, cst.Call)
    arg = first_arg(call)
    inner = direct_activation_input(flow, arg.value) if arg is not None else None
    if arg is None or inner is None:
        return call
    return call.with_changes(args=[a.with_changes(value=inner) if a is arg else a for a in call.args])

"""Collect per-file facts about model classes during the traversal.

The facts themselves (``ClassFacts``, ``FileFacts``) and the project pass that
merges them (``ProjectFacts``) live in ``project``, which needs no parser.
"""

from __future__ import annotations

import builtins
import re
from typing import Optional

import libcst as cst

from pytest_traincheck.lint.rule import dotted_name, get_arg, self_attr
from pytest_traincheck.lint.context import FileContext
from pytest_traincheck.analyses.torch_vocabulary import (
    ACTIVATION_FUNCS,
    ACTIVATION_METHODS,
    ACTIVATION_MODULES,
    RECURRENT_LAYERS,
    is_mode_dependent,
    is_module_subclass_base,
    strip_passthrough,
    sequential_layers,
)
from pytest_traincheck.lint.project import ClassFacts, FileFacts, ProjectFacts

__all__ = ["ClassFacts", "FactsCollector", "FileFacts", "ProjectFacts", "activation_of", "contains_recurrent",
           "module_activation"]

# What a DataLoader subclass passes or sets when it decides the order of the samples itself.
_ORDER_WORDS = frozenset({"shuffle", "sampler", "batch_sampler"})


def activation_of(context: FileContext, expr: cst.BaseExpression, layers: dict[str, str]) -> Optional[str]:
    """Return 'softmax' / 'log_softmax' / 'sigmoid' if ``expr`` is such a call, else None.

    ``layers`` maps ``self.<attr>`` names to the activation of the module stored there.
    """
    if not isinstance(expr, cst.Call):
        return None
    qual = context.qualname(expr.func)
    if qual in ACTIVATION_FUNCS:
        return ACTIVATION_FUNCS[qual]
    if qual in ACTIVATION_MODULES:  # nn.Softmax(dim=1)(x)
        return None
    func = expr.func
    if isinstance(func, cst.Call):  # nn.Softmax(dim=1)(x)
        inner = context.qualname(func.func)
        return ACTIVATION_MODULES.get(inner or "")
    attr = self_attr(func)
    if attr is not None:
        return layers.get(attr)
    if isinstance(func, cst.Attribute) and func.attr.value in ACTIVATION_METHODS and qual is None:
        return ACTIVATION_METHODS[func.attr.value]
    return None


def module_activation(context: FileContext, expr: cst.BaseExpression) -> Optional[str]:
    """Return the activation a module constructor produces (``nn.Softmax`` or a Sequential ending in one)."""
    if not isinstance(expr, cst.Call):
        return None
    qual = context.qualname(expr.func)
    if qual in ACTIVATION_MODULES:
        return ACTIVATION_MODULES[qual]
    if qual == "torch.nn.Sequential":
        layers = sequential_layers(context, expr)
        return module_activation(context, layers[-1]) if layers else None
    return None


def contains_recurrent(context: FileContext, expr: cst.BaseExpression) -> bool:
    """True if ``expr`` constructs an RNN/LSTM/GRU (also inside Sequential/ModuleList)."""
    if not isinstance(expr, cst.Call):
        return False
    if context.qualname(expr.func) in RECURRENT_LAYERS:
        return True
    return any(contains_recurrent(context, arg.value) for arg in expr.args)


# Words naming a model handed to a class (``self.encoder = encoder``), and calls that never build a module.
_MODEL_WORDS = frozenset({"model", "net", "network", "encoder", "decoder", "backbone", "module", "layers", "features",
                          "classifier", "head", "body", "block", "blocks"})
_BUILTIN_NAMES = frozenset(dir(builtins))
_BUILTIN_CALLS = frozenset({"int", "float", "bool", "str", "len", "list", "dict", "tuple", "set", "range", "max",
                            "min", "sum", "abs", "round", "getattr", "isinstance", "super", "zip", "sorted",
                            "enumerate", "print", "hasattr", "type", "frozenset", "any", "all"})

_CLASS = object()  # marks an open class body in FactsCollector._methods
# How a method calls the model itself.
_SELF_CALLS = frozenset({"self", "self.__call__", "self.forward"})


def _own_output(value: cst.BaseExpression, own: set[str]) -> bool:
    """True for ``self(x)``, ``self.__call__(x)``, ``self.forward(x)`` or a local bound to one of them."""
    if isinstance(value, cst.Name):
        return value.value in own
    return isinstance(value, cst.Call) and dotted_name(value.func) in _SELF_CALLS


class FactsCollector(cst.BatchableCSTVisitor):
    """Collect ClassFacts for every top-level or nested class during the traversal."""

    def __init__(self, context: FileContext) -> None:
        super().__init__()
        self.context = context
        self.facts = FileFacts()
        # per open class: its facts and what each self.<attr> holds (an activation, or "class:<Name>")
        self._stack: list[tuple[ClassFacts, dict[str, str]]] = []
        self._in_forward = 0
        self._locals: list[dict[str, str]] = []
        # per open class body (_CLASS) and function inside a class: a method's (name, positional parameters
        # after self, locals holding the model's own output), or None for a function nested in a method
        self._methods: list[object] = []
        # per open class: attr -> "<method>:<index>:<param>" that stored a parameter there; attrs called
        # as a loss on the model's own output
        self._setters: list[dict[str, str]] = []
        self._loss_attrs: list[set[str]] = []

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        bases = []
        direct = False
        for arg in node.bases:
            qual = self.context.qualname(arg.value) or dotted_name(arg.value) or ""
            direct = direct or is_module_subclass_base(qual)
            bases.append(qual)
        facts = ClassFacts(node.name.value, bases=bases, direct_module=direct)
        self._stack.append((facts, {}))
        self._setters.append({})
        self._loss_attrs.append(set())
        self._methods.append(_CLASS)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        facts, _ = self._stack.pop()
        setters, losses = self._setters.pop(), self._loss_attrs.pop()
        self._methods.pop()
        facts.loss_params = [setters[attr] for attr in sorted(losses) if attr in setters]
        self.facts.classes[facts.name] = facts

    def visit_Assign(self, node: cst.Assign) -> None:
        if not self._stack:
            return
        facts, layers = self._stack[-1]
        method = self._method()
        for target in node.targets:
            attr = self_attr(target.target)
            if method is not None:
                self._note_method_assign(method, attr, target.target, node.value)
            if attr is not None:
                facts.orders = facts.orders or attr in _ORDER_WORDS
                held = self._user_class(node.value)
                activation = module_activation(self.context, node.value) or held
                if activation:
                    layers[attr] = activation
                if held and held[len("class:"):] not in facts.holds:
                    facts.holds.append(held[len("class:"):])
                facts.recurrent = facts.recurrent or contains_recurrent(self.context, node.value)
                facts.opaque = facts.opaque or self._opaque(node.value)
            elif self._in_forward and isinstance(target.target, cst.Name) and self._locals:
                activation = activation_of(self.context, node.value, layers)
                local_scope = self._locals[-1]
                if activation:
                    local_scope[target.target.value] = activation
                else:
                    local_scope.pop(target.target.value, None)

    def _note_method_assign(self, method: tuple[str, list[str], set[str]], attr: Optional[str],
                            target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        """Record ``self.<attr> = <parameter>`` (a setter) and locals bound to the model's own output."""
        name, params, own = method
        if attr is not None and isinstance(value, cst.Name) and value.value in params:
            self._setters[-1][attr] = f"{name}:{params.index(value.value)}:{value.value}"
        elif isinstance(target, cst.Name):
            if _own_output(value, own):
                own.add(target.value)
            else:
                own.discard(target.value)

    def _method(self) -> Optional[tuple[str, list[str], set[str]]]:
        """The method being walked (directly in a class body), or None."""
        top = self._methods[-1] if self._methods else None
        return top if isinstance(top, tuple) else None

    def _note_loss_call(self, node: cst.Call) -> None:
        """Record ``self.<attr>(<the model's own output>, ...)``: that attribute is used as a loss."""
        method = self._method()
        attr = self_attr(node.func)
        if method is None or attr is None or not node.args or node.args[0].keyword is not None:
            return
        if _own_output(node.args[0].value, method[2]):  # self.loss_op(self(x), y)
            self._loss_attrs[-1].add(attr)

    def visit_Arg(self, node: cst.Arg) -> None:
        if self._stack and node.keyword is not None and node.keyword.value in _ORDER_WORDS:
            self._stack[-1][0].orders = True  # `super().__init__(dataset, shuffle=True, ...)`

    def visit_Expr(self, node: cst.Expr) -> None:
        call = node.value
        if not self._stack or not isinstance(call, cst.Call) or not isinstance(call.func, cst.Attribute) \
                or call.func.attr.value != "add_module":
            return
        attr = self_attr(call.func.value)
        layer = get_arg(call, "module", 1)
        if attr is None or layer is None:
            return
        _, layers = self._stack[-1]
        activation = module_activation(self.context, layer.value)  # self.fc.add_module(...): its new last layer
        if activation:
            layers[attr] = activation
        else:
            layers.pop(attr, None)

    def visit_Call(self, node: cst.Call) -> None:
        if not self._stack:
            return
        self._note_loss_call(node)
        facts = self._stack[-1][0]
        qual = self.context.qualname(node.func)
        if is_mode_dependent(qual):
            facts.modal = True
        elif qual and qual.startswith("torch.nn.") and any(arg.star for arg in node.args):
            facts.opaque = True  # nn.Sequential(*layers): built from a list made elsewhere
        elif not facts.opaque and not (qual or "").startswith("torch."):
            name = (dotted_name(node.func) or "").rsplit(".", 1)[-1]
            if name[:1].isupper() and name not in _BUILTIN_NAMES and (qual or dotted_name(node.func)) not in facts.holds:
                facts.opaque = True  # a class built inside a container or a method: not followed

    def _opaque(self, value: cst.BaseExpression) -> bool:
        """True if ``value`` may be a module of unknown make: a helper's result or a model handed in."""
        if isinstance(value, cst.Name):
            words = set(re.split(r"[^a-z]+", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", value.value).lower()))
            return bool(words & _MODEL_WORDS) or value.value.lower().endswith(("net", "model"))
        if not isinstance(value, cst.Call):
            return False
        name = dotted_name(value.func) or ""
        qual = self.context.qualname(value.func) or ""
        last = name.rsplit(".", 1)[-1]
        if qual.startswith("torch.") or last[:1].isupper() or not last or name.startswith("self."):
            return False  # torch's own, a class (kept in ``holds``) or a method of the class itself
        return name not in _BUILTIN_CALLS

    def _user_class(self, value: cst.BaseExpression) -> Optional[str]:
        """Return ``class:Name`` when ``value`` builds an instance of a (non-torch) class."""
        if not isinstance(value, cst.Call):
            return None
        name = dotted_name(value.func)
        qual = self.context.qualname(value.func)
        if name is None or (qual or "").startswith("torch.") or not name.rsplit(".", 1)[-1][:1].isupper():
            return None
        return f"class:{qual or name}"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if self._stack and node.name.value == "__iter__":
            self._stack[-1][0].orders = True  # a loader that iterates in its own order
        if self._stack and node.name.value == "forward":
            self._in_forward += 1
            self._locals.append({})
        if self._stack:
            params = [p.name.value for p in (*node.params.posonly_params, *node.params.params)][1:]
            self._methods.append((node.name.value, params, set()) if self._methods[-1] is _CLASS else None)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        if self._stack and original_node.name.value == "forward":
            self._in_forward -= 1
            self._locals.pop()
        if self._stack:
            self._methods.pop()

    def visit_Return(self, node: cst.Return) -> None:
        if not self._stack or not self._in_forward or node.value is None:
            return
        facts, layers = self._stack[-1]
        value = strip_passthrough(node.value)
        activation = self._returned_activation(value, layers)
        if activation and activation not in facts.returns:
            facts.returns.append(activation)
        elif activation is None and "logits" not in facts.returns:
            facts.returns.append("logits")  # any other return: not provably an activation
        # What each element of a returned tuple is (``return probs, boxes``); "-:other" for a return of no tuple.
        items = [f"{index}:{self._returned_activation(strip_passthrough(e.value), layers) or 'logits'}"
                 for index, e in enumerate(value.elements)] \
            if isinstance(value, cst.Tuple) and not any(isinstance(e, cst.StarredElement) for e in value.elements) \
            else ["-:other"]
        facts.items.extend(item for item in items if item not in facts.items)

    def _returned_activation(self, value: cst.BaseExpression, layers: dict[str, str]) -> Optional[str]:
        activation = activation_of(self.context, value, layers)
        if activation is None and isinstance(value, cst.Name) and self._locals:
            activation = self._locals[-1].get(value.value)
        if activation is None and isinstance(value, cst.Call):
            func = value.func  # self.fc(x), or self.fc.forward(x)
            if isinstance(func, cst.Attribute) and func.attr.value == "forward" and self_attr(func) is None:
                func = func.value
            attr = self_attr(func)
            activation = layers.get(attr) if attr else None
        return activation

"""One read-only traversal of a libcst tree that dispatches to every rule's visit_/leave_ methods.

libcst's own visitors rebuild each node they pass (and re-validate it), which
costs more than parsing the file. Rules only read the tree, so this walker
follows the dataclass fields instead, in source order, skipping whitespace and
punctuation, and calls the same ``visit_<Node>``/``leave_<Node>`` methods that
libcst would.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional

import libcst as cst

_SKIPPED_FIELDS = frozenset({
    "lpar", "rpar", "lbracket", "rbracket", "lbrace", "rbrace", "comma", "semicolon", "colon", "equal",
    "dot", "header", "footer", "leading_lines", "lines_after_decorators", "trailing_whitespace",
    "empty_lines", "newline", "asynchronous", "indent", "star_tok",
})
# Fields whose declaration order differs from the order they appear in the source.
_ORDER_OVERRIDES: dict[type, tuple[str, ...]] = {
    cst.FunctionDef: ("decorators", "name", "params", "returns", "body"),
    cst.ClassDef: ("decorators", "name", "bases", "keywords", "body"),
    cst.IfExp: ("body", "test", "orelse"),
    cst.Arg: ("keyword", "value"),
    cst.Parameters: ("posonly_params", "params", "star_arg", "kwonly_params", "star_kwarg"),
}
_FIELDS: dict[type, tuple[str, ...]] = {}

Method = Callable[[cst.CSTNode], object]


def _fields(kind: type) -> tuple[str, ...]:
    names = _FIELDS.get(kind)
    if names is None:
        if kind in _ORDER_OVERRIDES:
            names = _ORDER_OVERRIDES[kind]
        else:
            names = tuple(
                f.name for f in dataclasses.fields(kind)
                if not f.name.startswith("whitespace") and f.name not in _SKIPPED_FIELDS
            )
        _FIELDS[kind] = names
    return names


def _is_node(kind: type) -> bool:
    # CSTNode is an ABC, whose isinstance() is slow: remember the answer per type.
    known = _IS_NODE.get(kind)
    if known is None:
        known = _IS_NODE[kind] = issubclass(kind, cst.CSTNode)
    return known


_IS_NODE: dict[type, bool] = {}


def children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """Return the child nodes of ``node`` that can hold code, in source order."""
    out: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        value = getattr(node, name, None)
        kind = type(value)
        if kind is tuple or kind is list:
            out.extend(item for item in value if _is_node(type(item)))  # type: ignore[union-attr]
        elif _is_node(kind):
            out.append(value)  # type: ignore[arg-type]
    return out


def _class_methods(kind: type) -> tuple[tuple[str, str], ...]:
    """Return ``(node name, attribute)`` for every visit_/leave_ method ``kind`` overrides, once per class."""
    found = _METHODS.get(kind)
    if found is None:
        base = cst.BatchableCSTVisitor
        # libcst's base visitor defines no-op methods for every node type: keep only overridden ones.
        found = tuple(
            (attr, attr[6:]) for attr in dir(kind)
            if attr[:6] in ("visit_", "leave_") and attr.count("_") == 1
            and getattr(kind, attr) is not getattr(base, attr, None)
        )
        _METHODS[kind] = found
    return found


_METHODS: dict[type, tuple[tuple[str, str], ...]] = {}


def _tables(visitors: Iterable[object]) -> tuple[dict[str, list[Method]], dict[str, list[Method]]]:
    visit: dict[str, list[Method]] = {}
    leave: dict[str, list[Method]] = {}
    for visitor in visitors:
        for attr, name in _class_methods(type(visitor)):
            table = visit if attr[0] == "v" else leave
            table.setdefault(name, []).append(getattr(visitor, attr))
    return visit, leave


def walk(module: cst.CSTNode, visitors: Iterable[object]) -> None:
    """Visit ``module`` depth-first in source order, calling every visitor's methods."""
    visit, leave = _tables(visitors)
    # Per node type: its visit methods, its leave methods (None when there are none) and its fields.
    plans: dict[type, tuple[list[Method], Optional[list[Method]], tuple[str, ...]]] = {}
    stack: list[tuple[cst.CSTNode, Optional[list[Method]]]] = [(module, None)]
    pop, push = stack.pop, stack.append
    is_node = _IS_NODE
    while stack:
        node, leaving = pop()
        if leaving is not None:
            for method in leaving:
                method(node)
            continue
        kind = type(node)
        plan = plans.get(kind)
        if plan is None:
            name = kind.__name__
            plan = plans[kind] = (visit.get(name, []), leave.get(name), _fields(kind))
        methods, leaves, fields = plan
        for method in methods:
            method(node)
        if leaves is not None:
            push((node, leaves))
        # Children are pushed last first, so that they are popped in source order.
        for name in reversed(fields):
            value = getattr(node, name, None)
            value_kind = type(value)
            if value_kind is tuple or value_kind is list:
                for item in reversed(value):  # type: ignore[call-overload]
                    item_kind = type(item)
                    known = is_node.get(item_kind)
                    if known is None:
                        known = _is_node(item_kind)
                    if known:
                        push((item, None))
            else:
                known = is_node.get(value_kind)
                if known is None:
                    known = _is_node(value_kind)
                if known:
                    push((value, None))  # type: ignore[arg-type]

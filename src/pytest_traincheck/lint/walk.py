"""One read-only traversal of a libcst tree that dispatches to every rule's visit_/leave_ methods.

libcst's own visitors rebuild each node they pass (and re-validate it), which
costs more than parsing the file. Rules only read the tree, so this walker
follows the dataclass fields instead, in source order, skipping whitespace and
punctuation, and calls the same ``visit_<Node>``/``leave_<Node>`` methods that
libcst would.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

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


def _children(node: cst.CSTNode) -> list[cst.CSTNode]:
    out: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        value = getattr(node, name, None)
        if isinstance(value, cst.CSTNode):
            out.append(value)
        elif isinstance(value, (tuple, list)):
            out.extend(item for item in value if isinstance(item, cst.CSTNode))
    return out


def _tables(visitors: Iterable[object]) -> tuple[dict[str, list[Method]], dict[str, list[Method]]]:
    visit: dict[str, list[Method]] = {}
    leave: dict[str, list[Method]] = {}
    for visitor in visitors:
        for attr in dir(type(visitor)):
            if attr.startswith("visit_") and attr.count("_") == 1:
                visit.setdefault(attr[6:], []).append(getattr(visitor, attr))
            elif attr.startswith("leave_") and attr.count("_") == 1:
                leave.setdefault(attr[6:], []).append(getattr(visitor, attr))
    # libcst's base visitor defines no-op methods for every node type: keep only overridden ones.
    base = cst.BatchableCSTVisitor
    for table, prefix in ((visit, "visit_"), (leave, "leave_")):
        for name in list(table):
            default = getattr(base, prefix + name, None)
            table[name] = [m for m in table[name] if getattr(m, "__func__", None) is not default]
            if not table[name]:
                del table[name]
    return visit, leave


def walk(module: cst.CSTNode, visitors: Iterable[object]) -> None:
    """Visit ``module`` depth-first in source order, calling every visitor's methods."""
    visit, leave = _tables(visitors)
    stack: list[tuple[cst.CSTNode, bool]] = [(module, False)]
    pop, push = stack.pop, stack.append
    while stack:
        node, leaving = pop()
        name = type(node).__name__
        if leaving:
            for method in leave[name]:
                method(node)
            continue
        methods = visit.get(name)
        if methods:
            for method in methods:
                method(node)
        if name in leave:
            push((node, True))
        children = _children(node)
        for child in reversed(children):
            push((child, False))

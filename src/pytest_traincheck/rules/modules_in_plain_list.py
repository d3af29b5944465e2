"""TRN209: submodules kept in a plain list or dict, so nn.Module never registers them."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid, self_attr
from pytest_traincheck.analyses.dataflow import FlowRule, nn_module_classes
from pytest_traincheck.analyses.torch_vocabulary import strip_wrappers

_CONTAINERS = frozenset({"torch.nn.ModuleList", "torch.nn.ModuleDict", "torch.nn.Sequential",
                         "torch.nn.ParameterList", "torch.nn.ParameterDict"})
# Modules with no parameters, buffers or train/eval behaviour: harmless in a plain list.
_STATELESS = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh", "Hardtanh",
    "Hardsigmoid", "Hardswish", "Softmax", "Softmax2d", "LogSoftmax", "Softmin", "Softplus", "Softsign",
    "Tanhshrink", "Softshrink", "Hardshrink", "LogSigmoid", "Threshold", "GLU", "Identity", "Flatten",
    "Unflatten", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "PixelShuffle", "PixelUnshuffle",
    "ChannelShuffle", "CosineSimilarity", "PairwiseDistance", "Fold", "Unfold",
})
_STATELESS_PREFIXES = ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "LPPool", "ZeroPad",
                       "ConstantPad", "ReflectionPad", "ReplicationPad", "CircularPad", "MaxUnpool")
_EMPTY_CALLS = frozenset({"list", "dict"})


class ModulesInPlainList(FlowRule):
    """Flags layers stored in a plain `list` / `dict` attribute of an `nn.Module`.

    ## What it does
    In a class deriving from `nn.Module` (directly, through a `torch.nn`
    class, Lightning, or another module class of the file), finds
    `self.<attr>` assigned a list, tuple or dict literal, or a list/dict
    comprehension, that builds modules (`nn.Linear(...)`, a module class of
    the same file, defined before or after, also moved with `.to(device)`),
    and `self.<attr> = []` later filled with `.append`, `.extend`, `+=`,
    `self.<attr> = self.<attr> + [...]` or item assignment of such modules.

    ## Why is this bad?
    `nn.Module` registers submodules only when they are assigned as attributes
    directly or held by `nn.ModuleList` / `nn.ModuleDict` / `nn.Sequential`.
    Layers in a plain list are invisible to `model.parameters()` (the optimizer
    never updates them: they stay at their random initialization),
    `model.to(device)` (device mismatch errors), `model.eval()` (their Dropout
    and BatchNorm stay in training mode) and `state_dict()` (they are not
    saved). Nothing fails loudly; the model just trains worse.

    ## Known problems
    Not flagged: lists later wrapped (`self.layers = nn.ModuleList(self.layers)`,
    `nn.Sequential(*self.layers)`), classes that call `add_module` /
    `register_module` themselves, lists of stateless modules (activations,
    pooling, padding, losses), lists of modules already registered elsewhere
    (`[self.conv1, self.conv2]`), and lists of instances of classes defined in
    another file (the rule cannot tell they are modules).

    ## Example
    ```python
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(64, 64) for _ in range(4)]
    ```

    ## Use instead
    ```python
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(64, 64) for _ in range(4)])
    ```
    """

    CODE = "TRN209"
    MESSAGE = ("Modules kept in a plain list or dict are not registered: `model.parameters()`, `.to()` and "
               "`.eval()` miss them; use `nn.ModuleList` / `nn.ModuleDict`.")
    TRIGGERS = ("Module", "nn.")

    VALID = [
        Valid("""
            import torch.nn as nn

            class MLP(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
                    self.heads = nn.ModuleDict({"a": nn.Linear(8, 2)})
                    self.sizes = [8, 8, 2]
                    self.names = ("fc1", "fc2")
            """),
        # A local list later wrapped.
        Valid("""
            import torch.nn as nn

            class CNN(nn.Module):
                def __init__(self):
                    super().__init__()
                    layers = [nn.Conv2d(1, 8, 3), nn.ReLU()]
                    self.features = nn.Sequential(*layers)
            """),
        # The attribute is wrapped later.
        Valid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.blocks = []
                    for _ in range(3):
                        self.blocks.append(nn.Linear(4, 4))
                    self.blocks = nn.ModuleList(self.blocks)
            """),
        # Already registered submodules, and stateless activations.
        Valid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv1 = nn.Conv2d(1, 8, 3)
                    self.conv2 = nn.Conv2d(8, 8, 3)
                    self.convs = [self.conv1, self.conv2]
                    self.acts = [nn.ReLU(), nn.Tanh()]
            """),
        # Not a module class.
        Valid("""
            import torch.nn as nn

            class Builder:
                def __init__(self):
                    self.layers = [nn.Linear(4, 4)]
            """),
        # The list is grown with instances of a later class that is not a module, or with activations.
        Valid("""
            import torch

            class Net(torch.nn.Module):
                def __init__(self, dims):
                    super().__init__()
                    self.stages = []
                    self.acts = []
                    for d in range(len(dims) - 1):
                        self.stages = self.stages + [Stage(dims[d], dims[d + 1])]
                        self.acts = self.acts + [torch.nn.ReLU()]

            class Stage:
                def __init__(self, n_in, n_out):
                    self.shape = (n_in, n_out)
            """),
        # Grown in a loop, then wrapped.
        Valid("""
            import torch

            class Net(torch.nn.Module):
                def __init__(self, dims):
                    super().__init__()
                    self.layers = []
                    for d in range(len(dims) - 1):
                        self.layers = self.layers + [Layer(dims[d], dims[d + 1]).to(device)]
                    self.layers = torch.nn.ModuleList(self.layers)

            class Layer(torch.nn.Linear):
                pass
            """),
    ]
    INVALID = [
        Invalid("""
            import torch.nn as nn

            class MLP(nn.Module):
                def __init__(self, depth):
                    super().__init__()
                    self.layers = [nn.Linear(64, 64) for _ in range(depth)]

                def forward(self, x):
                    for layer in self.layers:
                        x = layer(x)
                    return x
            """, line=6, column=23),
        Invalid("""
            from torch import nn

            class MultiHead(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.heads = {"age": nn.Linear(128, 1), "gender": nn.Linear(128, 2)}
            """, line=6),
        Invalid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.blocks = []
                    for i in range(4):
                        self.blocks.append(nn.Conv2d(8, 8, 3))
            """, line=6, column=23),
        Invalid("""
            import torch.nn as nn

            class Block(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(8, 8)

            class Model(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.blocks = [Block(), Block(), nn.Dropout(0.1)]
            """, line=11),
        # Grown by concatenation with instances of a module class defined further down, moved to a device.
        Invalid("""
            import torch
            import torch.nn as nn

            class Net(torch.nn.Module):
                def __init__(self, dims):
                    super().__init__()
                    self.layers = []
                    for d in range(len(dims) - 1):
                        self.layers = self.layers + [Layer(dims[d], dims[d + 1]).to(device)]

                def predict(self, x):
                    for layer in self.layers:
                        x = layer(x)
                    return x

            class Layer(nn.Linear):
                def forward(self, x):
                    return torch.relu(super().forward(x))
            """, line=7, column=23),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        # per open class: attr -> (reported node, holds modules); attrs dropped once wrapped
        self._found: list[dict[str, tuple[cst.CSTNode, bool]]] = []
        self._dropped: list[set[str]] = []
        self._is_module: list[bool] = []
        # per open class: attr -> names of classes it holds instances of that the file defines later
        self._later: list[dict[str, set[str]]] = []
        self._unsettled: list[tuple[str, cst.CSTNode, set[str]]] = []  # settled at the end of the file

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._found.append({})
        self._dropped.append(set())
        self._is_module.append(self.flow.classes[-1].is_module)
        self._later.append({})

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        found, dropped, is_module, later = self._found.pop(), self._dropped.pop(), self._is_module.pop(), \
            self._later.pop()
        if is_module:
            for attr, (node, holds) in found.items():
                if attr in dropped:
                    continue
                if holds:
                    self._report(attr, node)
                elif later.get(attr):
                    self._unsettled.append((attr, node, later[attr]))

    def leave_Module(self, original_node: cst.Module) -> None:
        classes = self.flow.file_classes
        for attr, node, names in self._unsettled:
            if any(name in classes and classes[name].is_module for name in names):
                self._report(attr, node)

    def _report(self, attr: str, node: cst.CSTNode) -> None:
        self.report(node, f"`self.{attr}` keeps modules in a plain container, so they are not "
                    "registered: `model.parameters()`, `.to()` and `.eval()` miss them; use "
                    "`nn.ModuleList` / `nn.ModuleDict`.")

    def visit_Assign(self, node: cst.Assign) -> None:
        if not self._found or self.flow.current_class() is None:
            return
        for target in node.targets:
            attr = self_attr(target.target)
            if attr is not None:
                self._assign(attr, node.value)
            elif isinstance(target.target, cst.Subscript):  # self.heads["a"] = nn.Linear(...)
                self._add(self_attr(target.target.value), [node.value])

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if self._found and isinstance(node.value, (cst.List, cst.Tuple)):
            self._add(self_attr(node.target), [e.value for e in node.value.elements])

    def visit_Call(self, node: cst.Call) -> None:
        if not self._found:
            return
        func = node.func
        qual = self.qualname(func)
        if qual in _CONTAINERS:  # nn.ModuleList(self.layers), nn.Sequential(*self.layers)
            self._dropped[-1].update(a for a in (self_attr(arg.value) for arg in node.args) if a)
        elif isinstance(func, cst.Attribute) and func.attr.value in ("add_module", "register_module"):
            self._dropped[-1].add("*")
            self._dropped[-1].update(self._found[-1])
        elif isinstance(func, cst.Attribute) and node.args:
            owner = self_attr(func.value)
            value = node.args[-1].value
            if func.attr.value in ("append", "insert"):
                self._add(owner, [value])
            elif func.attr.value == "extend" and isinstance(value, (cst.List, cst.Tuple)):
                self._add(owner, [e.value for e in value.elements])

    def _assign(self, attr: str, value: cst.BaseExpression) -> None:
        found = self._found[-1]
        if "*" in self._dropped[-1]:
            return
        elements = _elements(value)
        if elements is not None:
            holds = any(self._builds_module(e, attr) for e in elements)
            if holds or not elements or self._later[-1].get(attr):
                found[attr] = (value, holds)
                return
        grown = _grown(attr, value)
        if attr in found and grown is not None:  # self.layers = self.layers + [Layer(...)]
            self._add(attr, grown)
            return
        if attr in found:
            self._dropped[-1].add(attr)  # reassigned (wrapped, or replaced): not provably a plain list

    def _add(self, attr: Optional[str], values: list[cst.BaseExpression]) -> None:
        found = self._found[-1]
        if attr in found and any(self._builds_module(v, attr) for v in values):
            found[attr] = (found[attr][0], True)

    def _builds_module(self, expr: cst.BaseExpression, attr: Optional[str] = None) -> bool:
        expr = strip_wrappers(self.context, expr) or expr  # Layer(...).to(device)
        if not isinstance(expr, cst.Call):
            return False
        qual = self.qualname(expr.func)
        if qual is not None:
            module, _, name = qual.rpartition(".")
            return (module == "torch.nn" and name in nn_module_classes() and name not in _STATELESS
                    and not name.startswith(_STATELESS_PREFIXES) and not name.endswith("Loss"))
        if isinstance(expr.func, cst.Name) and not self.flow.bound(expr.func.value):
            name = expr.func.value
            info = self.flow.file_classes.get(name)
            if info is None and attr is not None and name[:1].isupper():
                self._later[-1].setdefault(attr, set()).add(name)  # perhaps a module class defined further down
            return info is not None and info.is_module
        return False


def _grown(attr: str, value: cst.BaseExpression) -> Optional[list[cst.BaseExpression]]:
    """The elements ``self.<attr> + [...]`` (or ``[...] + self.<attr>``) adds, else None."""
    if not isinstance(value, cst.BinaryOperation) or not isinstance(value.operator, cst.Add):
        return None
    for mine, other in ((value.left, value.right), (value.right, value.left)):
        if self_attr(mine) == attr and isinstance(other, (cst.List, cst.Tuple)):
            return [e.value for e in other.elements]
    return None


def _elements(value: cst.BaseExpression) -> Optional[list[cst.BaseExpression]]:
    """The element (or dict value) expressions a container literal or comprehension builds, else None."""
    if isinstance(value, (cst.List, cst.Tuple)):
        return [e.value for e in value.elements]
    if isinstance(value, cst.Dict):
        return [e.value for e in value.elements if isinstance(e, cst.DictElement)]
    if isinstance(value, cst.ListComp):
        return [value.elt]
    if isinstance(value, cst.DictComp):
        return [value.value]
    if isinstance(value, cst.Call) and isinstance(value.func, cst.Name) and value.func.value in _EMPTY_CALLS \
            and not value.args:
        return []
    return None

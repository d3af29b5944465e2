"""TRN202: a Conv/Linear layer with a bias feeding BatchNorm directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid
from pytest_traincheck.analyses.dataflow import FlowRule, bias_enabled, first_arg, set_keyword
from pytest_traincheck.analyses.torch_vocabulary import BATCHNORM_LAYERS, BIAS_POSITION, BIASED_LAYERS, sequential_layers

_Layer = tuple[str, cst.Call]  # (qualified class, its construction)


@dataclass
class _ListSeq:
    """The layers appended so far to a local list later unpacked into ``nn.Sequential(*layers)``."""

    last: Optional[_Layer] = None
    pairs: list[_Layer] = field(default_factory=list)


class BiasBeforeBatchNorm(FlowRule):
    """Flags `nn.Conv*d` / `nn.Linear` layers with a bias whose output goes straight into BatchNorm.

    ## What it does
    Finds a convolution or linear layer built with its bias (the default, or
    `bias=True`) that feeds an `nn.BatchNorm*` layer directly: adjacent in
    `nn.Sequential(...)` (also through a literal list unpacked with
    `nn.Sequential(*layers)`, built with `=`, `+=`, `.append` and `.extend`), or in a
    module whose methods call `self.bn(self.conv(x))` or `x = self.conv(x)`
    then `x = self.bn(x)`, with both layers built in the class, when the
    layer's output feeds the BatchNorm alone. The finding points at the
    layer's construction.

    ## Why is this bad?
    BatchNorm subtracts the per-channel mean of its input, so a constant
    added just before it cancels out: the bias is a parameter that never
    changes the output, costs memory and optimizer work, and its gradient is
    always zero. BatchNorm's own `beta` already provides the shift. The seed
    lists it as "bias when using BatchNorm: add bias=False".

    ## Known problems
    Only direct adjacency is flagged: `conv -> ReLU -> BN` keeps its bias
    (it is not redundant there), and so does a layer whose output is also
    read beside the BatchNorm (`h = self.conv(x)`, then `self.bn(h) + h`: the
    residual still carries the bias), a layer that is also called without a
    BatchNorm after it, or whose BatchNorm is applied only in an `if`
    (`if self.with_bn: x = self.bn(x)`). Layers built by helper functions
    (`conv3x3(...)`), passed in as arguments, or built in a base class are
    not followed. Removing the bias changes the `state_dict` keys, so
    pretrained checkpoints of the old architecture will not load with
    `strict=True` (torchvision's VGG-BN is one such model).

    ## Example
    ```python
    self.conv = nn.Conv2d(3, 64, kernel_size=3, padding=1)
    self.bn = nn.BatchNorm2d(64)
    ...
    x = self.bn(self.conv(x))
    ```

    ## Use instead
    ```python
    self.conv = nn.Conv2d(3, 64, kernel_size=3, padding=1, bias=False)
    self.bn = nn.BatchNorm2d(64)
    ```

    ## Fix safety
    Unsafe: the bias has no effect on the BatchNorm's output, so the model
    computes the same function, but `bias=False` removes the `<layer>.bias`
    key from the `state_dict`: loading an existing checkpoint then fails with
    `Unexpected key(s) in state_dict: "conv.bias"` unless it is loaded with
    `strict=False` (or the key is dropped). Apply it with `--unsafe-fixes`
    where no checkpoint of the old architecture must load.
    """

    CODE = "TRN202"
    MESSAGE = "This layer's bias is cancelled by the BatchNorm that follows it: create it with `bias=False`."
    FIX_TITLE = "Add `bias=False`"
    FIX_SAFE = False  # the state_dict loses the bias key: existing checkpoints no longer load strictly
    SEVERITY = "warning"
    TRIGGERS = ("BatchNorm",)

    VALID = [
        Valid("""
            from collections import OrderedDict
            import torch.nn as nn
            block = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(3, 16, 3, bias=False)),
                ("bn", nn.BatchNorm2d(16)),
            ]))
            """),
        # ResNet-style block: conv without bias, then BN.
        Valid("""
            import torch.nn as nn

            class Block(nn.Module):
                def __init__(self, c):
                    super().__init__()
                    self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
                    self.bn = nn.BatchNorm2d(c)

                def forward(self, x):
                    return self.bn(self.conv(x)).relu()
            """),
        # Conv -> ReLU -> BN: the bias is not redundant.
        Valid("""
            import torch.nn as nn
            net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.BatchNorm2d(8))
            """),
        Valid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(1, 8, 3)
                    self.bn = nn.BatchNorm2d(8)

                def forward(self, x):
                    x = self.conv(x)
                    x = x.relu()
                    return self.bn(x)
            """),
        # Bias decided at run time: not provably on.
        Valid("""
            import torch.nn as nn
            layer = nn.Sequential(nn.Linear(4, 4, bias=not use_bn), nn.BatchNorm1d(4))
            """),
        # The BatchNorm is optional: without it the bias matters.
        Valid("""
            import torch.nn as nn

            class Head(nn.Module):
                def __init__(self, with_bn=True):
                    super().__init__()
                    self.fc = nn.Linear(8, 8)
                    self.bn = nn.BatchNorm1d(8)
                    self.with_bn = with_bn

                def forward(self, x):
                    x = self.fc(x)
                    if self.with_bn:
                        x = self.bn(x)
                    return x

                def features(self, x):
                    return self.fc(x)
            """),
        # A BatchNorm before the linear layer, not after.
        Valid("""
            import torch.nn as nn
            head = nn.Sequential(nn.BatchNorm1d(512), nn.Linear(512, 10))
            """),
    ]
    INVALID = [
        # A Sequential given an OrderedDict of named layers.
        Invalid("""
            from collections import OrderedDict
            import torch.nn as nn
            block = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(3, 16, 3)),
                ("bn", nn.BatchNorm2d(16)),
                ("relu", nn.ReLU()),
            ]))
            """, line=4, column=14, expected_fix="""
            from collections import OrderedDict
            import torch.nn as nn
            block = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(3, 16, 3, bias=False)),
                ("bn", nn.BatchNorm2d(16)),
                ("relu", nn.ReLU()),
            ]))
            """),
        Invalid(
            """
            import torch.nn as nn
            features = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
            """,
            line=2, column=26,
            expected_fix="""
            import torch.nn as nn
            features = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            """,
        ),
        # The seed's example: the layers are built in __init__ and chained in forward.
        Invalid(
            """
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(1, 8, 3, bias=True)
                    self.bn = nn.BatchNorm2d(8)

                def forward(self, x):
                    return self.bn(self.conv(x))
            """,
            line=6, column=21,
            expected_fix="""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(1, 8, 3, bias=False)
                    self.bn = nn.BatchNorm2d(8)

                def forward(self, x):
                    return self.bn(self.conv(x))
            """,
        ),
        Invalid(
            """
            from torch import nn

            class MLP(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(
                        784,
                        256,
                    )
                    self.norm = nn.BatchNorm1d(256)

                def forward(self, x):
                    x = self.fc(x)
                    x = self.norm(x)
                    return x
            """,
            line=6,
            expected_fix="""
            from torch import nn

            class MLP(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(
                        784,
                        256,
                        bias=False,
                    )
                    self.norm = nn.BatchNorm1d(256)

                def forward(self, x):
                    x = self.fc(x)
                    x = self.norm(x)
                    return x
            """,
        ),
        # A VGG-style list built in a loop and unpacked into nn.Sequential.
        Invalid(
            """
            import torch.nn as nn

            def make_layers(cfg):
                layers = []
                in_channels = 3
                for v in cfg:
                    conv = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
                    layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                    in_channels = v
                return nn.Sequential(*layers)
            """,
            line=7, column=16,
            expected_fix="""
            import torch.nn as nn

            def make_layers(cfg):
                layers = []
                in_channels = 3
                for v in cfg:
                    conv = nn.Conv2d(in_channels, v, kernel_size=3, padding=1, bias=False)
                    layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                    in_channels = v
                return nn.Sequential(*layers)
            """,
        ),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._lists: list[dict[str, _ListSeq]] = [{}]
        self._reported: set[int] = set()
        # Layers called in methods: construction id -> [layer, calls, calls feeding BN, `if` depth of last call].
        self._uses: dict[int, list] = {}
        # Layers adjacent to a BatchNorm in a Sequential, judged once every call in the file is seen.
        self._sequenced: list[_Layer] = []
        # Names read as a BatchNorm's input, names that are not reads (targets, attributes, keywords),
        # and the layers whose output some other read also sees (`self.bn(h) + h`).
        self._bn_inputs: set[int] = set()
        self._not_reads: set[int] = set()
        self._escaped: set[int] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._lists.append({})
        self._not_reads.add(id(node.name))

    def visit_Param(self, node: cst.Param) -> None:
        self._not_reads.add(id(node.name))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self._not_reads.add(id(node.attr))

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self._not_reads.add(id(node.keyword))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._mark_targets(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._mark_targets(node.target)

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._mark_targets(node.target)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._mark_targets(node.asname.name)

    def _mark_targets(self, target: cst.BaseExpression) -> None:
        if isinstance(target, cst.Name):
            self._not_reads.add(id(target))
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._mark_targets(element.value)
        elif isinstance(target, cst.StarredElement):
            self._mark_targets(target.value)

    def visit_Name(self, node: cst.Name) -> None:
        if id(node) in self._not_reads or id(node) in self._bn_inputs:
            return
        value = self.flow.evaluate(node)
        if value is not None and value.kind == "out" and value.detail in BIASED_LAYERS \
                and isinstance(value.node, cst.Call):
            self._escaped.add(id(value.node))  # the layer's output is read beside (or instead of) the norm

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._lists.pop()

    def visit_Call(self, node: cst.Call) -> None:
        qual = self.qualname(node.func)
        if qual == "torch.nn.Sequential":
            self._check_sequential(node)
            return
        callee = self.flow.evaluate(node.func) if qual is None else None
        if callee is not None and callee.kind == "module" and isinstance(callee.node, cst.Call):
            self._count_use(node, callee.detail, callee.node)
        self._track_list_call(node)

    def _count_use(self, node: cst.Call, qual: str, construction: cst.Call) -> None:
        """Count calls of a layer built in this file, and those whose output goes straight into BatchNorm."""
        depth = len(self.flow.ifs)
        if qual in BIASED_LAYERS:
            use = self._uses.setdefault(id(construction), [(qual, construction), 0, 0, depth])
            use[1] += 1
            use[3] = depth
        elif qual in BATCHNORM_LAYERS:
            arg = first_arg(node)
            value = self.flow.evaluate(arg.value) if arg is not None else None
            if value is None or value.kind != "out" or value.detail not in BIASED_LAYERS \
                    or not isinstance(value.node, cst.Call):
                return
            if isinstance(arg.value, cst.Name):
                self._bn_inputs.add(id(arg.value))
            # self.bn(self.conv(x)): the BN call is visited before the conv call it wraps.
            use = self._uses.setdefault(id(value.node), [(value.detail, value.node), 0, 0, depth])
            if use[3] == depth:  # a BN applied only in an `if` keeps the bias useful
                use[2] += 1

    def leave_Module(self, original_node: cst.Module) -> None:
        for layer, calls, into_bn, _ in self._uses.values():
            if calls and into_bn == calls:  # every use feeds BatchNorm: the bias never matters
                self._flag(layer)
        for layer in self._sequenced:
            use = self._uses.get(id(layer[1]))
            if use is None or use[1] == use[2]:  # not also called on its own elsewhere
                self._flag(layer)

    def visit_Assign(self, node: cst.Assign) -> None:
        for assign_target in node.targets:
            self._mark_targets(assign_target.target)
        target = node.targets[0].target
        if len(node.targets) == 1 and isinstance(target, cst.Name):
            if isinstance(node.value, (cst.List, cst.Tuple)):
                self._lists[-1][target.value] = self._extend(_ListSeq(), [e.value for e in node.value.elements])
            else:
                self._lists[-1].pop(target.value, None)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        seq = self._lists[-1].get(node.target.value) if isinstance(node.target, cst.Name) else None
        if seq is not None and isinstance(node.value, (cst.List, cst.Tuple)):
            self._extend(seq, [e.value for e in node.value.elements])

    def _track_list_call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute) or not isinstance(func.value, cst.Name):
            return
        seq = self._lists[-1].get(func.value.value)
        if seq is None or not node.args:
            return
        value = node.args[0].value
        if func.attr.value == "append":
            self._extend(seq, [value])
        elif func.attr.value == "extend" and isinstance(value, (cst.List, cst.Tuple)):
            self._extend(seq, [e.value for e in value.elements])
        else:
            seq.last = None

    def _extend(self, seq: _ListSeq, elements: Sequence[cst.BaseExpression]) -> _ListSeq:
        for element in elements:
            layer = self._layer(element)
            if seq.last is not None and layer is not None and layer[0] in BATCHNORM_LAYERS:
                seq.pairs.append(seq.last)
            seq.last = layer
        return seq

    def _check_sequential(self, node: cst.Call) -> None:
        previous: Optional[_Layer] = None
        named = sequential_layers(self.context, node)
        args = [cst.Arg(layer) for layer in named] if named is not None else node.args
        for arg in args:
            if arg.keyword is not None:
                return
            if arg.star:
                if isinstance(arg.value, cst.Name) and arg.value.value in self._lists[-1]:
                    self._sequenced.extend(self._lists[-1][arg.value.value].pairs)
                elements = arg.value.elements if isinstance(arg.value, (cst.List, cst.Tuple)) else []
                seq = self._extend(_ListSeq(previous), [e.value for e in elements])
                self._sequenced.extend(seq.pairs)
                previous = seq.last if elements else None
                continue
            layer = self._layer(arg.value)
            if previous is not None and layer is not None and layer[0] in BATCHNORM_LAYERS:
                self._sequenced.append(previous)
            previous = layer

    def _layer(self, expr: cst.BaseExpression) -> Optional[_Layer]:
        """Return (class, construction) if ``expr`` builds or holds a torch layer built in this file."""
        if isinstance(expr, cst.Call):
            qual = self.qualname(expr.func)
            return (qual, expr) if qual in BIASED_LAYERS or qual in BATCHNORM_LAYERS else None
        value = self.flow.evaluate(expr)
        if value is not None and value.kind == "module" and isinstance(value.node, cst.Call):
            return value.detail, value.node
        return None

    def _flag(self, layer: _Layer) -> None:
        qual, call = layer
        if qual not in BIASED_LAYERS or id(call) in self._reported or id(call) in self._escaped \
                or not bias_enabled(call, qual):
            return
        self._reported.add(id(call))
        position = BIAS_POSITION.get(qual)
        self.report(call, fix=lambda node: set_keyword(node, "bias", cst.Name("False"), position))

"""TRN206: ``module.forward(x)`` instead of ``module(x)``."""

from __future__ import annotations

import re

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid, dotted_name
from pytest_traincheck.analyses.dataflow import FlowRule

# Receivers whose last name says "a model": model, net, encoder, teacher_model, self.backbone...
# Not `module` / `*_module`: script, mobile, remote and fx graph modules are called that, and their
# `.forward()` is often the required spelling (TorchScript interfaces) or a deliberate bypass.
_MODEL_NAME = re.compile(
    r"^(model|net|network|encoder|decoder|backbone|generator|discriminator|classifier|head"
    r"|teacher|student|critic|actor|policy|layer|block)$"
    r"|(_model|_net|_network|_encoder|_decoder|_backbone|_head|_block)$|^(model|net)_"
)
# Libraries whose model wrappers (not nn.Modules) have a public `.forward()` method.
_FORWARD_WRAPPERS = frozenset({"skorch"})
_SCRIPTED = ("jit.script", "jit.script_method", "jit.export", "jit.interface", "jit.ignore", "jit.unused")
_MODULE_KINDS = frozenset({"module", "seq"})


class ForwardCalledDirectly(FlowRule):
    """Flags `model.forward(x)` calls that bypass `nn.Module.__call__`.

    ## What it does
    Finds calls of `.forward(...)` on a receiver that is plausibly an
    `nn.Module` instance:

    * a name or `self.<attr>` bound in the file to a torch module
      (`nn.Linear(...)`, `nn.Sequential(...)`) or to an instance of a module
      class of the same file (`model = Net()`);
    * otherwise, a receiver whose last name reads as a model: `model`, `net`,
      `network`, `module`, `encoder`, `decoder`, `backbone`, `generator`,
      `discriminator`, `classifier`, `head`, `teacher`, `student`, `critic`,
      `actor`, `policy`, `layer`, `block`, or ending in `_model`, `_net`,
      `_encoder`, `_decoder`, `_head`, `_block` (`self.text_encoder.forward(x)`).
      Not `module` / `*_module`: TorchScript, mobile, remote and fx graph
      modules go by those names, and for them `.forward()` is often required
      or a deliberate bypass.

    ## Why is this bad?
    `model(x)` runs `nn.Module.__call__`, which runs the forward pre-hooks and
    hooks registered on the module (and by libraries on it: pruning, weight
    norm, spectral norm, quantization observers, FSDP and DDP bookkeeping,
    profilers) before and after `forward`. `model.forward(x)` skips all of
    them: a pruned model computes with the unpruned weights, spectral norm is
    never applied, a DDP-wrapped model does not synchronize.

    ## Known problems
    Deliberately not flagged: `super().forward(x)` and `Base.forward(self, x)`
    (a subclass delegating to its parent), a class calling its own
    `self.forward(...)` (Lightning modules and `predict` helpers do this on
    purpose; hooks on the module itself are the author's to manage), calls on
    a capitalized name (a class: `MyFunction.forward(ctx, x)` for
    `torch.autograd.Function`), and receivers whose name says nothing (`obj`,
    `ctx`, `m`, `module`), and functions compiled by TorchScript
    (`@torch.jit.script`, `@torch.jit.export`...), where hooks do not run and
    interface types must be called through `.forward()`. The name heuristic can flag a non-module object with a
    `forward` method named like a model.

    ## Example
    ```python
    logits = model.forward(images)
    ```

    ## Use instead
    ```python
    logits = model(images)
    ```

    ## Fix safety
    Unsafe: the hooks that the call now runs may change the result (that is
    the point), and a receiver that is not an `nn.Module` may not be callable.
    """

    CODE = "TRN206"
    MESSAGE = "Calling `.forward()` directly skips the module's hooks: call the module itself, `model(x)`."
    FIX_TITLE = "Call the module instead of `.forward`"
    FIX_SAFE = False
    SEVERITY = "warning"
    TRIGGERS = ("forward",)

    VALID = [
        Valid("""
            import torch.nn as nn

            class Child(Base):
                def forward(self, x):
                    y = super().forward(x)
                    return Base.forward(self, y)
            """),
        # A class calling its own forward.
        Valid("""
            import pytorch_lightning as pl

            class Lit(pl.LightningModule):
                def training_step(self, batch, idx):
                    return self.forward(batch[0]).sum()
            """),
        # torch.autograd.Function: the static forward is called on the class.
        Valid("""
            import torch

            class Square(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    ctx.save_for_backward(x)
                    return x * x

            y = Square.forward(ctx, x)
            """),
        # A receiver that says nothing about being a module.
        Valid("""
            def run(pipeline, x):
                return pipeline.forward(x)
            """),
        # TorchScript: an interface module must be called through forward.
        Valid("""
            import torch

            @torch.jit.script
            def run(model: MyInterface, t: torch.Tensor) -> torch.Tensor:
                return model.forward(t)
            """),
        # Passing the bound method (to trace or inspect it) is not a call.
        Valid("""
            import inspect
            sig = inspect.signature(model.forward)
            """),
    ]
    INVALID = [
        Invalid(
            """
            import torch
            model = torch.nn.Linear(4, 2)
            out = model.forward(torch.randn(3, 4))
            """,
            line=3, column=7,
            expected_fix="""
            import torch
            model = torch.nn.Linear(4, 2)
            out = model(torch.randn(3, 4))
            """,
        ),
        Invalid(
            """
            import torch.nn as nn

            class Wrapper(nn.Module):
                def __init__(self, encoder):
                    super().__init__()
                    self.encoder = encoder

                def forward(self, x):
                    return self.encoder.forward(x)
            """,
            line=9, column=16,
            expected_fix="""
            import torch.nn as nn

            class Wrapper(nn.Module):
                def __init__(self, encoder):
                    super().__init__()
                    self.encoder = encoder

                def forward(self, x):
                    return self.encoder(x)
            """,
        ),
        Invalid(
            """
            import torch.nn as nn

            class Net(nn.Module):
                def forward(self, x):
                    return x

            net = Net()
            y = net.forward(x)
            """,
            line=8,
            expected_fix="""
            import torch.nn as nn

            class Net(nn.Module):
                def forward(self, x):
                    return x

            net = Net()
            y = net(x)
            """,
        ),
        Invalid(
            """
            for batch in loader:
                logits = model.forward(batch["input_ids"])
            """,
            line=2,
            expected_fix="""
            for batch in loader:
                logits = model(batch["input_ids"])
            """,
        ),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._scripted = 0  # depth of TorchScript functions: no hooks there, `.forward()` may be required

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._scripted += self._is_scripted(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._scripted -= self._is_scripted(original_node)

    def _is_scripted(self, node: cst.FunctionDef) -> bool:
        for decorator in node.decorators:
            target = decorator.decorator.func if isinstance(decorator.decorator, cst.Call) else decorator.decorator
            if (self.qualname(target) or "").endswith(_SCRIPTED):
                return True
        return False

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if self._scripted or not isinstance(func, cst.Attribute) or func.attr.value != "forward":
            return
        if self._plausible_module(func.value):
            self.report(node, fix=_call_receiver)

    def _plausible_module(self, receiver: cst.BaseExpression) -> bool:
        name = dotted_name(receiver)
        if name is None or name == "self":
            return False  # super().forward, self.layers[0].forward, the class's own forward
        last = name.rsplit(".", 1)[-1]
        if last[:1].isupper() or self.qualname(receiver) is not None:
            return False  # a class (Base.forward(self, x)), or an imported name
        value = self.flow.evaluate(receiver)
        if value is not None and value.kind in _MODULE_KINDS:
            return value.detail.startswith("torch.nn.") or value.kind == "seq"
        if value is not None and value.kind == "instance":
            info = self.flow.file_classes.get(value.detail)
            if info is not None:
                return info.is_module
        if any(full.split(".")[0] in _FORWARD_WRAPPERS for full in self.context.imports.values()):
            return False  # skorch's NeuralNet.forward(X) is that library's documented API, not nn.Module's
        return bool(_MODEL_NAME.search(last.lower()))


def _call_receiver(node: cst.CSTNode) -> cst.CSTNode:
    assert isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
    return node.with_changes(func=node.func.value)

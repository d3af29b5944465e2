"""TRN203: softmax, log_softmax or softmin without an explicit ``dim``."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid, get_arg, self_attr
from pytest_traincheck.analyses.dataflow import FlowRule, set_keyword
from pytest_traincheck.analyses.torch_vocabulary import LINEAR_LAYERS

# Implicit dim (deprecated, warns): where ``dim`` sits positionally.
_IMPLICIT = {
    "torch.nn.Softmax": 0, "torch.nn.LogSoftmax": 0, "torch.nn.Softmin": 0,
    "torch.nn.functional.softmax": 1, "torch.nn.functional.log_softmax": 1, "torch.nn.functional.softmin": 1,
}
# dim is required: the call raises TypeError.
_REQUIRED = {
    "torch.softmax": 1, "torch.log_softmax": 1, "torch.special.softmax": 1, "torch.special.log_softmax": 1,
}
_METHODS = frozenset({"softmax", "log_softmax"})


class SoftmaxWithoutDim(FlowRule):
    """Flags softmax-like calls that leave `dim` to PyTorch's guess.

    ## What it does
    Finds `nn.Softmax()`, `nn.LogSoftmax()`, `nn.Softmin()`, `F.softmax(x)`,
    `F.log_softmax(x)` and `F.softmin(x)` with no `dim` (positional or keyword),
    and `torch.softmax(x)`, `torch.log_softmax(x)` and `x.softmax()`, which
    require one.

    ## Why is this bad?
    Without `dim`, `nn.Softmax` and `F.softmax` pick it from the input's rank
    (dim 0 for 0-, 1- and 3-D inputs, dim 1 otherwise) and emit a deprecation
    warning. For a batch of sequences `(batch, time, classes)` that normalizes
    across the batch, silently mixing samples. `torch.softmax(x)` and
    `x.softmax()` have no default and raise `TypeError` when the line runs.

    ## Known problems
    Calls with `*args` / `**kwargs` are not checked. The fix is offered only
    when the input is provably the output of an `nn.Linear` (in an
    `nn.Sequential` right after one, or `F.softmax(self.fc(x))` where
    `self.fc` is an `nn.Linear`), whose class dimension is the last one.

    ## Example
    ```python
    head = nn.Sequential(nn.Linear(512, 10), nn.Softmax())
    ```

    ## Use instead
    ```python
    head = nn.Sequential(nn.Linear(512, 10), nn.Softmax(dim=-1))
    ```

    ## Fix safety
    Safe: the fix adds `dim=-1` only on an `nn.Linear` output, whose features
    are its last dimension. For 1-D and 2-D inputs that is exactly the
    dimension PyTorch picks implicitly, so nothing changes; for higher ranks
    the implicit choice normalized over another dimension (the batch, for 3-D
    inputs), and the fix makes it normalize over the features as intended.
    """

    CODE = "TRN203"
    MESSAGE = ("Softmax without `dim`: PyTorch guesses the dimension from the input's rank (dim 0 for 3-D inputs) "
               "and warns; pass `dim=` explicitly, usually `dim=1` or `dim=-1` for class scores.")
    FIX_TITLE = "Add `dim=-1` (the features of the `nn.Linear` output)"
    SEVERITY = "warning"
    TRIGGERS = ("softmax", "Softmax", "softmin", "Softmin")

    VALID = [
        Valid("""
            import torch.nn as nn
            import torch.nn.functional as F
            head = nn.Sequential(nn.Linear(512, 10), nn.Softmax(dim=1))
            probs = F.softmax(logits, 1)
            logp = F.log_softmax(logits, dim=-1)
            """),
        Valid("""
            import torch
            probs = torch.softmax(logits, -1)
            p = logits.softmax(dim=1)
            q = logits.log_softmax(-1)
            """),
        # Arguments forwarded with **kwargs may carry dim.
        Valid("""
            import torch.nn.functional as F
            def soft(x, **kwargs):
                return F.softmax(x, **kwargs)
            """),
        # Not torch: scipy's softmax has its own default.
        Valid("""
            from scipy.special import softmax
            p = softmax(scores)
            """),
        # A module attribute called with its input is not the tensor method.
        Valid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.softmax = nn.Softmax(dim=1)

                def forward(self, x):
                    return self.softmax(x)
            """),
    ]
    INVALID = [
        Invalid(
            """
            import torch.nn as nn
            head = nn.Sequential(nn.Linear(512, 10), nn.Softmax())
            """,
            line=2, column=42,
            expected_fix="""
            import torch.nn as nn
            head = nn.Sequential(nn.Linear(512, 10), nn.Softmax(dim=-1))
            """,
        ),
        Invalid(
            """
            import torch.nn as nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(128, 10)

                def forward(self, x):
                    x = self.fc(x)
                    return F.log_softmax(x)
            """,
            line=11,
            expected_fix="""
            import torch.nn as nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(128, 10)

                def forward(self, x):
                    x = self.fc(x)
                    return F.log_softmax(x, dim=-1)
            """,
        ),
        # Input of unknown rank: reported without a fix.
        Invalid("""
            import torch.nn.functional as F
            attn = F.softmax(scores)
            """, line=2, column=8),
        Invalid("""
            import torch.nn as nn
            self_softmax = nn.LogSoftmax()
            """, line=2),
        Invalid("""
            import torch
            probs = torch.softmax(logits)
            """, line=2),
        Invalid("""
            import torch
            probs = model(torch.randn(1, 3)).softmax()
            """, line=2),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._after_linear: set[int] = set()

    def visit_Call(self, node: cst.Call) -> None:
        qual = self.qualname(node.func)
        if qual == "torch.nn.Sequential":
            self._note_sequential(node)
            return
        if any(arg.star for arg in node.args):
            return
        if qual in _IMPLICIT and get_arg(node, "dim", _IMPLICIT[qual]) is None:
            position = _IMPLICIT[qual]
            fixable = id(node) in self._after_linear or (position == 1 and self._is_linear_output(node))
            fix = (lambda n: set_keyword(n, "dim", _minus_one(), position)) if fixable else None
            self.report(node, fix=fix)
        elif qual in _REQUIRED and get_arg(node, "dim", _REQUIRED[qual]) is None:
            self.report(node, f"`{qual}` requires `dim`: this call raises `TypeError`; pass `dim=` explicitly.")
        elif qual is None and self._is_dimless_method(node):
            method = node.func.attr.value  # type: ignore[attr-defined]
            self.report(node, f"`Tensor.{method}()` requires `dim`: this call raises `TypeError`; "
                        "pass `dim=` explicitly.")

    def _is_dimless_method(self, node: cst.Call) -> bool:
        func = node.func
        return (isinstance(func, cst.Attribute) and func.attr.value in _METHODS and not node.args
                and self_attr(func) is None and not (isinstance(func.value, cst.Name) and func.value.value == "self"))

    def _is_linear_output(self, node: cst.Call) -> bool:
        arg = get_arg(node, "input", 0)
        value = self.flow.evaluate(arg.value) if arg is not None else None
        return value is not None and value.kind == "out" and value.detail in LINEAR_LAYERS

    def _note_sequential(self, node: cst.Call) -> None:
        previous: Optional[str] = None
        for arg in node.args:
            if arg.star or arg.keyword is not None:
                return
            value = arg.value
            qual = self.qualname(value.func) if isinstance(value, cst.Call) else None
            if qual in _IMPLICIT and previous in LINEAR_LAYERS:
                self._after_linear.add(id(value))
            previous = qual


def _minus_one() -> cst.UnaryOperation:
    return cst.UnaryOperation(cst.Minus(), cst.Integer("1"))

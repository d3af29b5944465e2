"""TRN107: the deprecated ``clip_grad_norm`` without the trailing underscore."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Rule, Valid

_DEPRECATED = "torch.nn.utils.clip_grad_norm"


class DeprecatedClipGradNorm(Rule):
    """Flags `clip_grad_norm`, the deprecated spelling of `clip_grad_norm_`.

    ## What it does
    Finds calls of `torch.nn.utils.clip_grad_norm` (no trailing underscore),
    however it was imported.

    ## Why is this bad?
    The function clips in place, which PyTorch marks with a trailing underscore;
    the old name has been deprecated since torch 0.4 and warns on every call, once
    per training step. The seed guide's clipping snippet uses it.

    ## Example
    ```python
    torch.nn.utils.clip_grad_norm(model.parameters(), max_norm=1)
    ```

    ## Use instead
    ```python
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1)
    ```

    ## Fix safety
    Safe: the two names are the same function.
    """

    CODE = "TRN107"
    MESSAGE = "`clip_grad_norm` is deprecated: call `torch.nn.utils.clip_grad_norm_` (in place, same arguments)."
    FIX_TITLE = "Rename to `clip_grad_norm_`"
    TRIGGERS = ("clip_grad_norm",)

    VALID = [
        Valid("import torch\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"),
        Valid("from torch.nn.utils import clip_grad_norm_\nclip_grad_norm_(params, max_norm=1)\n"),
        Valid("def clip_grad_norm(params, m):\n    return 0\nclip_grad_norm(params, 1)\n"),
    ]
    INVALID = [
        Invalid(
            "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), max_norm=1)\n",
            line=2, column=1,
            expected_fix="import torch\ntorch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1)\n",
        ),
        # Imported by name: renaming the call alone would break the import, so no fix.
        Invalid("from torch.nn.utils import clip_grad_norm\nclip_grad_norm(model.parameters(), 5)\n", line=2, column=1),
        Invalid(
            "import torch.nn as nn\nnn.utils.clip_grad_norm(params, 0.5)\n",
            line=2,
            expected_fix="import torch.nn as nn\nnn.utils.clip_grad_norm_(params, 0.5)\n",
        ),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        if self.qualname(node.func) == _DEPRECATED:
            self.report(node, fix=_rename if isinstance(node.func, cst.Attribute) else None)


def _rename(node: cst.CSTNode) -> cst.CSTNode:
    assert isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
    return node.with_changes(func=node.func.with_changes(attr=cst.Name("clip_grad_norm_")))

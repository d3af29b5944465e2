"""TRN901: deprecated (or removed) torch APIs with a known replacement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import libcst as cst

from pytest_traincheck.versions import older_than
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, dotted_name, is_false, is_true


@dataclass(frozen=True)
class Deprecation:
    """One deprecated API: what replaces it, since when, and how to fix it."""

    replacement: str  # shown in the message
    since: str  # the torch release that deprecated it (and shipped the replacement)
    removed: bool = False  # calling it raises in current torch
    fix: Optional[str] = None  # "rename:<new last name>", "multi_dot" or "amp:<device>"
    note: str = ""


# Checked against torch 2.14 (its warnings, errors and docstrings) and the PRs that deprecated them.
DEPRECATED: dict[str, Deprecation] = {
    "torch.ger": Deprecation("`torch.outer`", "1.7", fix="rename:outer"),
    "torch.chain_matmul": Deprecation("`torch.linalg.multi_dot([...])`", "1.9", fix="multi_dot",
                                      note="it takes the matrices as one list"),
    "torch.range": Deprecation("`torch.arange`", "0.4", note="`torch.range` includes `end`, `arange` excludes it"),
    "torch.symeig": Deprecation("`torch.linalg.eigh`", "1.9", removed=True),
    "torch.eig": Deprecation("`torch.linalg.eig`", "1.9", removed=True),
    "torch.qr": Deprecation("`torch.linalg.qr`", "1.9", removed=True),
    "torch.solve": Deprecation("`torch.linalg.solve`", "1.9", removed=True, note="its arguments are reversed"),
    "torch.lstsq": Deprecation("`torch.linalg.lstsq`", "1.9", removed=True, note="its arguments are reversed"),
    "torch.matrix_rank": Deprecation("`torch.linalg.matrix_rank`", "1.9", removed=True),
    "torch.cholesky": Deprecation("`torch.linalg.cholesky`", "1.9", removed=True),
    "torch.lu": Deprecation("`torch.linalg.lu_factor`", "1.13"),
    "torch.lu_solve": Deprecation("`torch.linalg.lu_solve`", "1.13", note="its arguments are reordered"),
    "torch.triangular_solve": Deprecation("`torch.linalg.solve_triangular`", "1.13"),
    "torch.autograd.Variable": Deprecation("the tensor itself (`x.requires_grad_()` where gradients are needed)",
                                           "0.4"),
    "torch.nn.functional.upsample": Deprecation("`torch.nn.functional.interpolate`", "0.4", fix="rename:interpolate"),
    "torch.nn.functional.upsample_bilinear": Deprecation(
        "`F.interpolate(..., mode='bilinear', align_corners=True)`", "0.4"),
    "torch.nn.functional.upsample_nearest": Deprecation("`F.interpolate(..., mode='nearest')`", "0.4"),
    "torch.cuda.amp.autocast": Deprecation("`torch.amp.autocast('cuda', ...)`", "2.4", fix="amp:cuda"),
    "torch.cpu.amp.autocast": Deprecation("`torch.amp.autocast('cpu', ...)`", "2.4", fix="amp:cpu"),
    "torch.cuda.amp.GradScaler": Deprecation("`torch.amp.GradScaler('cuda', ...)`", "2.4", fix="amp:cuda"),
    "torch.set_default_tensor_type": Deprecation("`torch.set_default_dtype` / `torch.set_default_device`", "2.1"),
    "torch.testing.assert_allclose": Deprecation("`torch.testing.assert_close`", "1.12",
                                                 note="its default tolerances differ"),
    "torch.nn.utils.weight_norm": Deprecation("`torch.nn.utils.parametrizations.weight_norm`", "2.1",
                                              note="the state_dict keys differ"),
}
for _init in ("uniform", "normal", "constant", "eye", "dirac", "xavier_uniform", "xavier_normal",
              "kaiming_uniform", "kaiming_normal", "orthogonal", "sparse"):
    DEPRECATED[f"torch.nn.init.{_init}"] = Deprecation(f"`torch.nn.init.{_init}_`", "0.4", fix=f"rename:{_init}_")

# size_average= / reduce= of the losses (deprecated in 0.4.1): what reduction= they mean.
_LEGACY = ("size_average", "reduce")
# The position of each loss's first legacy parameter (torch 2.14's signatures): a call with more
# positional arguments than that passes a legacy value by position, which the fix cannot see.
_LEGACY_POSITION = {
    "binary_cross_entropy": 3, "binary_cross_entropy_with_logits": 3, "cosine_embedding_loss": 4,
    "cross_entropy": 3, "hinge_embedding_loss": 3, "kl_div": 2, "l1_loss": 2, "margin_ranking_loss": 4,
    "mse_loss": 2, "multi_margin_loss": 5, "multilabel_margin_loss": 2, "multilabel_soft_margin_loss": 3,
    "nll_loss": 3, "poisson_nll_loss": 4, "smooth_l1_loss": 2, "soft_margin_loss": 2, "triplet_margin_loss": 7,
    "BCELoss": 1, "BCEWithLogitsLoss": 1, "CosineEmbeddingLoss": 1, "CrossEntropyLoss": 1, "HingeEmbeddingLoss": 1,
    "KLDivLoss": 0, "L1Loss": 0, "MSELoss": 0, "MarginRankingLoss": 1, "MultiLabelMarginLoss": 0,
    "MultiLabelSoftMarginLoss": 1, "MultiMarginLoss": 3, "NLLLoss": 1, "PoissonNLLLoss": 2, "SmoothL1Loss": 0,
    "SoftMarginLoss": 0, "TripletMarginLoss": 4,
}
_LOSS_FUNCS = frozenset(name for name in _LEGACY_POSITION if name[0].islower())


class DeprecatedTorchApi(Rule):
    """Flags deprecated or removed torch APIs that have a documented replacement.

    ## What it does
    Finds calls of the APIs in the rule's table (`DEPRECATED` in
    `rules/deprecated_torch_api.py`, each with the torch release that
    deprecated it): `torch.ger`, `torch.chain_matmul`, `torch.range`, the
    pre-`torch.linalg` functions (`torch.symeig`, `eig`, `qr`, `solve`,
    `lstsq`, `matrix_rank`, `cholesky`, removed: they raise; `lu`,
    `lu_solve`, `triangular_solve`), `torch.autograd.Variable`,
    `F.upsample*`, `torch.cuda.amp.autocast` / `GradScaler`,
    `torch.cpu.amp.autocast`, `torch.set_default_tensor_type`,
    `torch.testing.assert_allclose`, `torch.nn.utils.weight_norm`, the
    `torch.nn.init` functions without a trailing underscore, and the
    `size_average=` / `reduce=` arguments of losses. When the project targets
    an older torch (`torch-version`), deprecations newer than it are skipped.
    `clip_grad_norm` is TRN107's.

    ## Why is this bad?
    Deprecated APIs warn on every call (often once per training step) and are
    eventually removed: the `torch.linalg` predecessors already raise. Several
    have subtle differences the replacement fixes (`torch.range` includes its
    end point; `size_average`/`reduce` are two booleans for one choice).

    ## Known problems
    `F.sigmoid` and `F.tanh` are not flagged: their deprecation warnings were
    dropped and current torch documents them normally. Tensor methods
    (`x.ger(y)`) are not checked, since the receiver's type is unknown.

    ## Example
    ```python
    outer = torch.ger(a, b)
    criterion = nn.CrossEntropyLoss(size_average=False)
    ```

    ## Use instead
    ```python
    outer = torch.outer(a, b)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    ```

    ## Fix safety
    Safe, and offered only where the replacement computes the same thing:
    pure renames (`torch.ger` -> `torch.outer`, `F.upsample` ->
    `F.interpolate`, `nn.init.normal` -> `nn.init.normal_`), `chain_matmul(a, b)`
    -> `torch.linalg.multi_dot([a, b])` with two or more matrices,
    `torch.cuda.amp.autocast(...)` -> `torch.amp.autocast("cuda", ...)` when
    all arguments are keywords (their positions differ), and literal
    `size_average=`/`reduce=` mapped exactly as torch maps them: when either is
    not None, torch ignores `reduction=` and the fix writes the reduction torch
    computes (None counts as True); when both are None they are dropped and
    `reduction=` stays as written. Legacy values passed by position or held in
    variables, and `F.kl_div` beside a `reduction=` that may be `"batchmean"`
    (which still divides by the batch), get no fix. Every combination is run
    through torch before and after the fix in the tests. Names imported
    directly (`from torch import ger`) are reported without a fix.

    ## Options
    `torch-version` in `[tool.traincheck]`: deprecations newer than it are not reported.
    """

    CODE = "TRN901"
    MESSAGE = "A deprecated torch API is used: use the documented replacement."
    FIX_TITLE = "Use the replacement API"
    SEVERITY = "warning"
    TRIGGERS = ("torch",)

    VALID = [
        Valid("import torch\nouter = torch.outer(a, b)\n"),
        Valid("import torch.nn as nn\ncriterion = nn.CrossEntropyLoss(reduction='sum')\n"),
        Valid("import torch.nn.functional as F\ny = F.sigmoid(x) + F.tanh(x)\n"),
        Valid("import torch.nn as nn\nnn.init.kaiming_normal_(w, mode='fan_out')\n"),
        Valid("import numpy as np\nr = np.range(3) if False else np.arange(3)\n"),
        Valid("def ger(a, b):\n    return a\nger(1, 2)\n"),
    ]
    INVALID = [
        # The seed's einsum supplement.
        Invalid("import torch\nouter = torch.ger(a, b)\n", line=2, column=9,
                expected_fix="import torch\nouter = torch.outer(a, b)\n"),
        Invalid("from torch import ger\nouter = ger(a, b)\n", line=2),
        Invalid("import torch\nx = torch.range(0, 10)\n", line=2),
        Invalid("import torch.nn as nn\ncriterion = nn.CrossEntropyLoss(size_average=False)\n", line=2, column=13,
                expected_fix="import torch.nn as nn\ncriterion = nn.CrossEntropyLoss(reduction='sum')\n"),
        Invalid("import torch.nn.functional as F\nloss = F.nll_loss(out, y, reduce=False)\n",
                expected_fix="import torch.nn.functional as F\nloss = F.nll_loss(out, y, reduction='none')\n"),
        Invalid("import torch\nscaler = torch.cuda.amp.GradScaler(enabled=use_amp)\n",
                expected_fix="import torch\nscaler = torch.amp.GradScaler('cuda', enabled=use_amp)\n"),
        Invalid("import torch\nwith torch.cuda.amp.autocast(dtype=torch.bfloat16):\n    out = model(x)\n",
                expected_fix=("import torch\nwith torch.amp.autocast('cuda', dtype=torch.bfloat16):\n"
                              "    out = model(x)\n")),
        Invalid("import torch\ny = torch.chain_matmul(a, b, c)\n",
                expected_fix="import torch\ny = torch.linalg.multi_dot([a, b, c])\n"),
        Invalid("import torch.nn as nn\nnn.init.xavier_uniform(layer.weight)\n",
                expected_fix="import torch.nn as nn\nnn.init.xavier_uniform_(layer.weight)\n"),
        Invalid("import torch\nw, v = torch.symeig(a, eigenvectors=True)\n"),
        Invalid("from torch.autograd import Variable\nx = Variable(torch.randn(3), requires_grad=True)\n"),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        qual = self.qualname(node.func)
        if qual is None:
            return
        entry = DEPRECATED.get(qual)
        if entry is not None:
            if not older_than(getattr(self.context, "torch_version", None), entry.since):
                self.report(node, _message(qual, entry), fix=self._fixer(node, entry))
        elif _is_loss(qual) and any(a.keyword is not None and a.keyword.value in _LEGACY for a in node.args):
            self._report_legacy(node, qual)

    def _report_legacy(self, node: cst.Call, qual: str) -> None:
        meaning = _legacy_reduction(node, qual)
        if meaning is _KEEP:
            message = ("`size_average=None` / `reduce=None` are deprecated since torch 0.4.1 and have no effect: "
                       "drop them (`reduction=` decides, as it does now).")
            self.report(node, message, fix=_drop_legacy)
        elif meaning is None:
            self.report(node, "`size_average=` / `reduce=` are deprecated since torch 0.4.1: pass `reduction=` "
                              "(when either is not None, torch ignores `reduction=`).")
        else:
            message = (f"`size_average=` / `reduce=` are deprecated since torch 0.4.1: pass `reduction='{meaning}'` "
                       "(what torch computes now; it ignores any `reduction=` beside them).")
            self.report(node, message, fix=lambda call: _set_reduction(call, meaning))

    def _fixer(self, node: cst.Call, entry: Deprecation) -> Optional[Callable[[cst.CSTNode], cst.CSTNode]]:
        func = node.func
        if entry.fix is None or not isinstance(func, cst.Attribute):
            return None
        kind, _, detail = entry.fix.partition(":")
        if kind == "rename":
            return lambda call: call.with_changes(func=call.func.with_changes(attr=cst.Name(detail)))
        if kind == "multi_dot" and len(node.args) >= 2 and all(a.keyword is None and not a.star for a in node.args):
            return _multi_dot
        torch = func.value.value.value if isinstance(func.value, cst.Attribute) and isinstance(
            func.value.value, cst.Attribute) else None
        keywords_only = all(a.keyword for a in node.args)
        if kind == "amp" and torch is not None and self.qualname(torch) == "torch" and keywords_only:
            return lambda call: _amp(call, torch, detail)
        return None


def _message(qual: str, entry: Deprecation) -> str:
    status = "was removed (calling it raises)" if entry.removed else "is deprecated"
    note = f"; {entry.note}" if entry.note else ""
    return f"`{qual}` {status} since torch {entry.since}: use {entry.replacement}{note}."


def _is_loss(qual: str) -> bool:
    if qual.startswith("torch.nn.functional."):
        return qual.rsplit(".", 1)[-1] in _LOSS_FUNCS
    return qual.startswith("torch.nn.") and qual.endswith("Loss") and qual.count(".") == 2


_KEEP = "keep"  # every legacy argument is None: torch uses `reduction=` as written


def _legacy_reduction(call: cst.Call, qual: str) -> Optional[str]:
    """Return the `reduction` torch computes for this call, ``_KEEP``, or None when unknown.

    torch ignores `reduction=` as soon as either legacy argument is not None and maps the pair as
    `_Reduction.legacy_get_string` does (None counts as True); when both are None, `reduction=` decides.
    """
    name = qual.rsplit(".", 1)[-1]
    positional = [a for a in call.args if a.keyword is None]
    if any(a.star for a in call.args) or len(positional) > _LEGACY_POSITION.get(name, -1):
        return None  # a legacy value (or the reduction) may be passed by position
    flags: dict[str, Optional[bool]] = {}
    reduction: Optional[cst.Arg] = None
    for arg in call.args:
        if arg.keyword is None:
            continue
        if arg.keyword.value == "reduction":
            reduction = arg
        elif arg.keyword.value in _LEGACY:
            if dotted_name(arg.value) == "None":
                flags[arg.keyword.value] = None
            elif is_true(arg.value) or is_false(arg.value):
                flags[arg.keyword.value] = not is_false(arg.value)
            else:
                return None
    if all(value is None for value in flags.values()):
        return _KEEP
    if name == "kl_div" and reduction is not None and not (
            isinstance(reduction.value, cst.SimpleString) and reduction.value.evaluated_value != "batchmean"):
        return None  # F.kl_div still divides by the batch when reduction == "batchmean", legacy or not
    size_average = flags.get("size_average") is not False
    reduce = flags.get("reduce") is not False
    return "mean" if size_average and reduce else "sum" if reduce else "none"


def _drop_legacy(node: cst.CSTNode) -> cst.CSTNode:
    assert isinstance(node, cst.Call)
    kept = [a for a in node.args if a.keyword is None or a.keyword.value not in _LEGACY]
    if kept:
        kept[-1] = kept[-1].with_changes(comma=node.args[-1].comma)
    return node.with_changes(args=kept)


def _set_reduction(node: cst.CSTNode, reduction: str) -> cst.CSTNode:
    assert isinstance(node, cst.Call)
    drop = (*_LEGACY, "reduction")
    kept = [a for a in node.args if a.keyword is None or a.keyword.value not in drop]
    trailing = node.args[-1].comma
    new = cst.Arg(keyword=cst.Name("reduction"), value=cst.SimpleString(f"'{reduction}'"),
                  equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")), comma=trailing)
    if kept and (kept[-1] is node.args[-1] or not isinstance(kept[-1].comma, cst.Comma)):
        comma = kept[-1].comma if isinstance(kept[-1].comma, cst.Comma) else cst.Comma(
            whitespace_after=cst.SimpleWhitespace(" "))
        kept[-1] = kept[-1].with_changes(comma=comma)
    return node.with_changes(args=[*kept, new])


def _multi_dot(node: cst.CSTNode) -> cst.CSTNode:
    assert isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
    elements = [cst.Element(a.value, comma=a.comma) for a in node.args]
    elements[-1] = elements[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    func = cst.Attribute(cst.Attribute(node.func.value, cst.Name("linalg")), cst.Name("multi_dot"))
    return node.with_changes(func=func, args=[cst.Arg(cst.List(elements))])


def _amp(node: cst.CSTNode, torch: cst.BaseExpression, device: str) -> cst.CSTNode:
    assert isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
    func = cst.Attribute(cst.Attribute(torch, cst.Name("amp")), node.func.attr)
    comma = cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")) if node.args else cst.MaybeSentinel.DEFAULT
    return node.with_changes(func=func, args=[cst.Arg(cst.SimpleString(f"'{device}'"), comma=comma), *node.args])

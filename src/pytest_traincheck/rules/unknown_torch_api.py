"""TRN208: an attribute of torch, torch.nn, torch.nn.functional, torch.optim or torch.utils.data that does not exist."""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Optional

import libcst as cst

from pytest_traincheck.analyses import torch_table
from pytest_traincheck.analyses.dataflow import torch_names
from pytest_traincheck.lint.project import Condition
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, dotted_name

CHECKED = ("torch", "torch.nn", "torch.nn.functional", "torch.optim", "torch.utils.data")
# Names from other frameworks that people reach for; difflib would not suggest these.
_ALIASES = {"Layer": "Linear", "Dense": "Linear", "FullyConnected": "Linear", "FC": "Linear"}
# Device modules that out-of-tree backends attach to torch at import time (torch_npu, habana, torch_mlu...).
_PLUGGED = {"torch": frozenset({"npu", "hpu", "mlu", "musa", "gcu", "sdaa", "dipu", "ipu"})}
_GUARD_WORDS = ("hasattr", "getattr", "version", "available", "supported")
_GUARD_ERRORS = frozenset({"AttributeError", "ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


@lru_cache(maxsize=None)
def exists(module: str, name: str) -> bool:
    """True if ``module.name`` is in the shipped table (attribute or submodule) or a plugged device module."""
    shipped = torch_names()["modules"]
    return name in shipped.get(module, ()) or name in _PLUGGED.get(module, ())  # type: ignore[union-attr]


def suggestion(module: str, name: str) -> Optional[str]:
    """Return the closest real name in ``module``."""
    names = torch_names()["modules"].get(module, ())  # type: ignore[union-attr]
    candidates = [n for n in names if not n.startswith("_")]
    for candidate in candidates:
        if candidate.lower() == name.lower() and candidate[:1].isupper() == name[:1].isupper():
            return candidate
    for candidate in candidates:
        if candidate.lower() == name.lower():
            return candidate
    if name in _ALIASES and _ALIASES[name] in candidates:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


class UnknownTorchApi(Rule):
    """Flags `torch` / `nn` / `F` / `optim` / `torch.utils.data` attributes that do not exist.

    ## What it does
    Resolves attribute chains through the file's imports (`import torch.nn as
    nn`, `from torch import nn`, `import torch.nn.functional as F`) and
    checks each attribute of `torch`, `torch.nn`, `torch.nn.functional`,
    `torch.optim` and `torch.utils.data`, and each name imported from them,
    against the names those modules define (their public attributes and
    submodules). The message suggests the closest real name.

    The names come from `analyses/data/torch_names.json`, generated from a torch
    release by `scripts/gen_torch_names.py`; linting never imports torch. When
    another torch release is installed, a name missing from the table is looked
    up in it once per run, by the parent process in a short-lived child process,
    so names added by a newer torch are not reported.

    ## Why is this bad?
    The line raises `AttributeError` (or `ImportError`) when it runs, which
    may be an hour into training, in the evaluation code that only runs at
    the end of an epoch, or in a rarely taken branch. The seed's code writes
    `nn.Layer` and `torch.einsm`.

    ## Known problems
    Names starting with `_` are not checked, nor are the device modules that
    out-of-tree backends attach to torch (`torch.npu`, `torch.hpu`, `torch.mlu`,
    `torch.musa`...), nor type annotations (names such as `torch.Device` exist
    only in torch's type stubs; a type checker reports typos there), nor
    attributes inside a `try` that catches `AttributeError`/`ImportError`/
    `Exception` or an `if` that tests `hasattr`, `getattr`, a version or an availability flag (feature
    detection across torch versions). A name removed from torch in both the
    shipped list's release and the installed one, but present in the older
    torch a project pins, is reported.

    ## Example
    ```python
    self.fc = nn.Layer(784, 10)
    y = torch.einsm("ij->ji", x)
    ```

    ## Use instead
    ```python
    self.fc = nn.Linear(784, 10)
    y = torch.einsum("ij->ji", x)
    ```
    """

    CODE = "TRN208"
    MESSAGE = "This attribute does not exist in torch: the line raises `AttributeError` when it runs."
    TRIGGERS = ("torch",)

    VALID = [
        Valid("""
            import torch
            import torch.nn as nn
            import torch.nn.functional as F
            from torch.utils.data import DataLoader, Dataset
            layer = nn.Linear(4, 2)
            y = torch.einsum("ij->ji", x)
            z = F.relu(y)
            opt = torch.optim.AdamW(layer.parameters())
            sched = torch.optim.lr_scheduler.StepLR(opt, 10)
            """),
        # Submodules that load lazily, and private names.
        Valid("""
            import torch
            torch.distributed.init_process_group("nccl")
            torch.compiler.reset()
            torch._dynamo.config.verbose = True
            """),
        # Feature detection across torch versions.
        Valid("""
            import torch
            if hasattr(torch, "frobnicate"):
                torch.frobnicate()
            try:
                from torch.nn import FancyAttention
            except ImportError:
                FancyAttention = None
            """),
        # Feature detection inside one expression (an accelerator plugin's availability test).
        Valid("""
            import torch
            def neuron_available():
                return hasattr(torch, "neuron") and torch.neuron.is_available()
            """),
        # Not torch: a local object that happens to be called torch-like.
        # Annotations: `torch.Device` exists only in the type stubs.
        Valid("""
            from __future__ import annotations
            import torch
            def to(x, device: torch.Device | None = None) -> torch.Tensor:
                target: torch.Device = device
                return x.to(target)
            """),
        Valid("""
            class nn:
                Layer = object
            layer = nn.Layer()
            """),
    ]
    INVALID = [
        Invalid(
            """
            import torch.nn as nn
            fc = nn.Layer(784, 10)
            """,
            line=2, column=6,
        ),
        Invalid("""
            import torch
            y = torch.einsm("ij->ji", x)
            """, line=2, column=5),
        Invalid("""
            from torch.utils.data import DataLoder
            """, line=1, column=30),
        Invalid("""
            import torch
            opt = torch.optim.Adamw(params, lr=1e-3)
            """, line=2),
        Invalid("""
            from torch.nn import functional as F
            out = F.soft_max(x, dim=1)
            """, line=2),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._guards = 0
        self._tests: list[bool] = []
        self._targets: set[int] = set()
        # The tests' text is part of the file's: with no guard word in the file, no test has one.
        lowered = context.source.lower()
        self._guard_words = any(word in lowered for word in _GUARD_WORDS)

    # -- guarded regions: feature detection is not a mistake ------------------------
    def visit_Try(self, node: cst.Try) -> None:
        self._guards += _catches_lookup_errors(node)

    def leave_Try(self, original_node: cst.Try) -> None:
        self._guards -= _catches_lookup_errors(original_node)

    def visit_If(self, node: cst.If) -> None:
        self._enter_test(node.test)

    def leave_If(self, original_node: cst.If) -> None:
        self._guards -= self._tests.pop()

    def visit_IfExp(self, node: cst.IfExp) -> None:
        self._enter_test(node.test)

    def leave_IfExp(self, original_node: cst.IfExp) -> None:
        self._guards -= self._tests.pop()

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        # `hasattr(torch, "neuron") and torch.neuron.is_available()`: the right side runs only when
        # the left one found the name.
        if isinstance(node.operator, cst.And):
            self._enter_test(node.left)
        else:
            self._tests.append(False)

    def leave_BooleanOperation(self, original_node: cst.BooleanOperation) -> None:
        self._guards -= self._tests.pop()

    def _enter_test(self, test: cst.BaseExpression) -> None:
        # Ifs nest, so what each one added is undone from a stack (the test is rendered once, not twice).
        guard = self._is_guard(test)
        self._tests.append(guard)
        self._guards += guard

    def visit_Annotation(self, node: cst.Annotation) -> None:
        self._guards += 1  # stub-only names (torch.Device) are fine in annotations; type checkers see typos

    def leave_Annotation(self, original_node: cst.Annotation) -> None:
        self._guards -= 1

    def visit_Assign(self, node: cst.Assign) -> None:
        self._targets.update(id(t.target) for t in node.targets)  # torch.x = ... defines it

    # -- checks ---------------------------------------------------------------
    def visit_Attribute(self, node: cst.Attribute) -> None:
        if self._guards or id(node) in self._targets:
            return
        qual = self.qualname(node)
        if qual is None:
            return
        module, _, name = qual.rpartition(".")
        if module in CHECKED and not name.startswith("_") and not exists(module, name):
            written = dotted_name(node.value) or module
            self._report(node, module, name, _message(written, module, name))

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if self._guards or node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = dotted_name(node.module)
        if module not in CHECKED:
            return
        for alias in node.names:
            name = dotted_name(alias.name)
            if name and not name.startswith("_") and not exists(module, name):
                self._report(alias, module, name, _message(module, module, name, imported=True))

    def _report(self, node: cst.CSTNode, module: str, name: str, message: str) -> None:
        if torch_table.authoritative():
            self.report(node, message)
        else:  # another torch release is installed: the run's parent asks it, once (torch_table)
            self.report_if(Condition("torch-missing", module, name), node, message)

    def _is_guard(self, test: cst.BaseExpression) -> bool:
        if not self._guard_words:
            return False
        code = self.context.module.code_for_node(test).lower()
        return any(word in code for word in _GUARD_WORDS)


def _catches_lookup_errors(node: cst.Try) -> bool:
    for handler in node.handlers:
        if handler.type is None:
            return True
        types = handler.type.elements if isinstance(handler.type, cst.Tuple) else [handler.type]
        for element in types:
            value = element.value if isinstance(element, cst.Element) else element
            if (dotted_name(value) or "").rsplit(".", 1)[-1] in _GUARD_ERRORS:
                return True
    return False


def _message(written: str, module: str, name: str, imported: bool = False) -> str:
    close = suggestion(module, name)
    hint = f"; did you mean `{written}.{close}`?" if close else "."
    if imported:
        hint = f"; did you mean `{close}`?" if close else "."
        return f"`{name}` does not exist in `{module}`: the import raises `ImportError`{hint}"
    return f"`{written}.{name}` does not exist in `{module}`: the line raises `AttributeError`{hint}"

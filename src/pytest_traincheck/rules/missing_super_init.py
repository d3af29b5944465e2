"""TRN207: an ``nn.Module`` subclass whose ``__init__`` never calls the base ``__init__``."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid, dotted_name
from pytest_traincheck.analyses.torch_vocabulary import is_module_subclass_base
from pytest_traincheck.analyses.dataflow import FlowRule


class MissingSuperInit(FlowRule):
    """Flags `nn.Module` subclasses whose `__init__` does not call `super().__init__()`.

    ## What it does
    Finds `__init__` methods of classes deriving from `nn.Module` (directly,
    through a `torch.nn` class such as `nn.Sequential`, through Lightning's
    `LightningModule`, or through another module class of the same file)
    that contain no call of a base initializer: `super().__init__(...)`,
    `super(Net, self).__init__(...)`, `nn.Module.__init__(self)` or
    `Base.__init__(self, ...)` all count. A bare reference such as
    `super().__init__` (no parentheses) does not.

    ## Why is this bad?
    `nn.Module.__init__` creates the dictionaries that hold parameters,
    buffers, submodules and hooks. Without it, the first `self.fc = nn.Linear(...)`
    raises `AttributeError: cannot assign module before Module.__init__() call`,
    and a module that assigns nothing fails on `model(x)` or
    `model.parameters()`. The seed's own example misspells the call.

    ## Known problems
    Classes whose bases come from another file are checked only when the
    base is a `torch.nn` class or nn.Module itself. An initializer reached
    through a helper (`self._setup()` calling `super().__init__()`) is
    reported; an `__init__` that only raises is not.

    ## Example
    ```python
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(784, 10)
    ```

    ## Use instead
    ```python
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)
    ```

    ## Fix safety
    Safe, and offered only for direct subclasses of `nn.Module` or
    `LightningModule`, whose initializers take no required argument: the fix
    inserts `super().__init__()` as the first statement (after the
    docstring). Without it, any use of the module raises.
    """

    CODE = "TRN207"
    MESSAGE = "This `nn.Module` subclass never calls `super().__init__()`: call it first in `__init__`."
    FIX_TITLE = "Insert `super().__init__()`"
    TRIGGERS = ("__init__",)

    VALID = [
        Valid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super(Net, self).__init__()
                    self.fc = nn.Linear(4, 2)
            """),
        Valid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self, n):
                    nn.Module.__init__(self)
                    self.n = n

            class Deeper(Net):
                def __init__(self):
                    Net.__init__(self, 3)
            """),
        # Not a module: a plain class may skip super().__init__().
        Valid("""
            class Config:
                def __init__(self):
                    self.lr = 0.1
            """),
        # An abstract initializer that only raises.
        Valid("""
            from torch import nn

            class Abstract(nn.Module):
                def __init__(self):
                    raise NotImplementedError
            """),
    ]
    INVALID = [
        Invalid(
            """
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self, n):
                    \"\"\"A tiny net.\"\"\"
                    self.fc = nn.Linear(n, 10)
            """,
            line=4, column=5,
            expected_fix="""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self, n):
                    \"\"\"A tiny net.\"\"\"
                    super().__init__()
                    self.fc = nn.Linear(n, 10)
            """,
        ),
        # `super().__init__` without parentheses calls nothing.
        Invalid(
            """
            import torch

            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__
                    self.fc = torch.nn.Linear(4, 2)
            """,
            line=4,
            expected_fix="""
            import torch

            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    super().__init__
                    self.fc = torch.nn.Linear(4, 2)
            """,
        ),
        # A subclass of another module class of the file: no fix (the base may need arguments).
        Invalid("""
            import torch.nn as nn

            class Base(nn.Module):
                def __init__(self, width):
                    super().__init__()
                    self.width = width

            class Wide(Base):
                def __init__(self):
                    self.extra = nn.Linear(8, 8)
            """, line=9),
        Invalid("""
            from torch import nn

            class Stack(nn.Sequential):
                def __init__(self, *layers):
                    self.depth = len(layers)
            """, line=4),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._calls: list[bool] = []  # per open __init__ of a module class: a base __init__ was called
        self._owners: list[str] = []  # the class of each open function ("" if not a module's __init__)
        self._bases: dict[str, list[str]] = {}  # class name -> its bases, qualified where possible

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        owner = self.flow.in_method("__init__")
        self._calls.append(owner is None or not owner.is_module or _exempt(node))
        self._owners.append(owner.name if owner is not None else "")

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        called, owner = self._calls.pop(), self._owners.pop()
        if not called:
            self.report(original_node, fix=_insert_super_init if self._direct_module(owner) else None)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if self._calls and isinstance(func, cst.Attribute) and func.attr.value == "__init__":
            self._calls[-1] = True

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._bases[node.name.value] = [self.qualname(b.value) or dotted_name(b.value) or "" for b in node.bases]

    def _direct_module(self, name: str) -> bool:
        bases = self._bases.get(name, [])
        return bool(bases) and all(is_module_subclass_base(b) for b in bases)


def _exempt(node: cst.FunctionDef) -> bool:
    """An overload stub, or an initializer whose first statement raises."""
    if any(dotted_name(d.decorator) in ("overload", "typing.overload") for d in node.decorators):
        return True
    body = node.body.body if isinstance(node.body, cst.IndentedBlock) else []
    statements = [s for s in body if not _is_docstring(s)]
    first = statements[0] if statements else None
    return isinstance(first, cst.SimpleStatementLine) and isinstance(first.body[0], cst.Raise)


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (isinstance(statement, cst.SimpleStatementLine) and isinstance(statement.body[0], cst.Expr)
            and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


def _insert_super_init(node: cst.CSTNode) -> cst.CSTNode:
    assert isinstance(node, cst.FunctionDef)
    if not isinstance(node.body, cst.IndentedBlock):
        return node
    body = list(node.body.body)
    index = 1 if body and _is_docstring(body[0]) else 0
    call = cst.parse_statement("super().__init__()\n")
    return node.with_changes(body=node.body.with_changes(body=[*body[:index], call, *body[index:]]))

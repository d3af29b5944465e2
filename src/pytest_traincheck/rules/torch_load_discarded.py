"""TRN501: `torch.load(...)` whose result is thrown away."""

from __future__ import annotations

from typing import Union

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Rule, Valid

_LOAD = "torch.load"
_NAME = "checkpoint"


class _Names(cst.CSTVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)


class TorchLoadDiscarded(Rule):
    """Flags `torch.load(...)` called as a statement, its result thrown away.

    ## What it does
    Finds expression statements that are only a `torch.load(...)` call, as in
    the seed's `if load_model: torch.load(save_file)`. Calls directly inside a
    `try` block (checking that a file loads) and in `test_*` functions are
    left alone.

    ## Why is this bad?
    `torch.load` returns the checkpoint; it does not restore anything by
    itself. Thrown away, the model and optimizer keep their fresh
    initialization and training "resumes" from scratch, silently.

    ## Example
    ```python
    if load_model:
        torch.load(save_file)
    ```

    ## Use instead
    ```python
    if load_model:
        checkpoint = torch.load(save_file, weights_only=True)
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    ```

    ## Fix safety
    Safe: the fix assigns the result to `checkpoint` (or `checkpoint_1`,
    `checkpoint_2`... when the enclosing function, or the module at module
    level, already uses that name), which changes nothing but keeps the
    object referenced until the name goes out of scope. Loading the state
    dicts from it is still up to you: the fix only makes that possible.
    """

    CODE = "TRN501"
    MESSAGE = ("The result of `torch.load(...)` is thrown away, so nothing is restored: assign it and load it, "
               "`checkpoint = torch.load(path); model.load_state_dict(checkpoint[...])`.")
    FIX_TITLE = "Assign the loaded checkpoint to a variable"
    TRIGGERS = ("load",)

    VALID = [
        Valid("""
            import torch
            ckpt = torch.load(p, weights_only=True)
            model.load_state_dict(ckpt["model"])
            """),
        Valid("""
            import torch
            model.load_state_dict(torch.load(path, weights_only=True))
            """),
        # Checking that the file loads.
        Valid("""
            import torch
            try:
                torch.load(path, weights_only=True)
            except Exception:
                print("corrupt checkpoint")
            """),
        Valid("""
            import pickle
            pickle.load(f)
            """),
    ]
    INVALID = [
        # The seed.
        Invalid("""
            import torch
            if load_model:
                torch.load(save_file)
            """, line=3, column=5, expected_fix="""
            import torch
            if load_model:
                checkpoint = torch.load(save_file)
            """),
        # The name is taken in this function: a fresh one.
        Invalid("""
            from torch import load
            def resume(model, checkpoint):
                load(checkpoint)
                return model
            """, line=3, expected_fix="""
            from torch import load
            def resume(model, checkpoint):
                checkpoint_1 = load(checkpoint)
                return model
            """),
        Invalid("""
            import torch as th
            def main():
                th.load("model.pt", map_location="cpu"); print("loaded")
            """, line=3, column=5, expected_fix="""
            import torch as th
            def main():
                checkpoint = th.load("model.pt", map_location="cpu"); print("loaded")
            """),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.scopes: list[Union[cst.FunctionDef, cst.Module]] = [context.module]
        self.tries = [0]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append(node)
        self.tries.append(0)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scopes.pop()
        self.tries.pop()

    def visit_Try(self, node: cst.Try) -> None:
        self.tries[-1] += 1

    def leave_Try(self, original_node: cst.Try) -> None:
        self.tries[-1] -= 1

    def visit_Expr(self, node: cst.Expr) -> None:
        if not isinstance(node.value, cst.Call) or self.qualname(node.value.func) != _LOAD or self.tries[-1]:
            return
        scope = self.scopes[-1]
        if isinstance(scope, cst.FunctionDef) and scope.name.value.startswith("test"):
            return
        name = _free_name(scope)
        self.report(node, fix=lambda expr: _assign(expr, name))


def _free_name(scope: cst.CSTNode) -> str:
    collector = _Names()
    scope.visit(collector)
    name, index = _NAME, 0
    while name in collector.names:
        index += 1
        name = f"{_NAME}_{index}"
    return name


def _assign(node: cst.CSTNode, name: str) -> cst.CSTNode:
    assert isinstance(node, cst.Expr)
    return cst.Assign(targets=[cst.AssignTarget(cst.Name(name))], value=node.value, semicolon=node.semicolon)

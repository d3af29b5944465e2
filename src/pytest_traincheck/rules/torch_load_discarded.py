"""TRN501: `torch.load(...)` whose result is thrown away, or assigned and never used."""

from __future__ import annotations

from typing import Union

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Rule, Valid

_LOAD = "torch.load"


class _Uses(cst.CSTVisitor):
    """Count how often each name occurs, and how often only as a plain assignment target."""

    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self.stored: dict[str, int] = {}

    def visit_Name(self, node: cst.Name) -> None:
        self.total[node.value] = self.total.get(node.value, 0) + 1

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        if isinstance(node.target, cst.Name):
            self.stored[node.target.value] = self.stored.get(node.target.value, 0) + 1

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.target, cst.Name) and node.value is not None:
            self.stored[node.target.value] = self.stored.get(node.target.value, 0) + 1

    def unused(self, name: str) -> bool:
        """True when ``name`` is only ever assigned, never read."""
        return self.total.get(name, 0) <= self.stored.get(name, 0)


class TorchLoadDiscarded(Rule):
    """Flags `torch.load(...)` whose result is thrown away or never used.

    ## What it does
    Finds expression statements that are only a `torch.load(...)` call, as in
    the seed's `if load_model: torch.load(save_file)`, and, inside a function,
    a `torch.load(...)` result assigned to a name that the function never
    reads (`checkpoint = torch.load(path)` and nothing restored from it).
    Calls directly inside a `try` block (checking that a file loads) and in
    `test_*` functions are left alone, and so is a module-level assignment,
    whose name another module may import.

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
    No fix: only you know which entries of the checkpoint belong to which
    object (`checkpoint["model"]`, `checkpoint["state_dict"]`...). Assigning
    the result to a name would silence the finding without restoring
    anything, so the finding stays until the state dicts are loaded.
    """

    CODE = "TRN501"
    MESSAGE = ("The result of `torch.load(...)` is thrown away, so nothing is restored: assign it and load it, "
               "`checkpoint = torch.load(path); model.load_state_dict(checkpoint[...])`.")
    UNUSED = ("The result of `torch.load(...)` is assigned to `{name}` but `{name}` is never used, so nothing is "
              "restored: load it, `model.load_state_dict({name}[...])`.")
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
        Valid("""
            import torch
            def resume(model, path):
                state: dict = torch.load(path, weights_only=True)
                model.load_state_dict(state)
            """),
        # Module level: another module may import the name.
        Valid("""
            import torch
            weights = torch.load("weights.pt", weights_only=True)
            """),
    ]
    INVALID = [
        # The seed.
        Invalid("""
            import torch
            if load_model:
                torch.load(save_file)
            """, line=3, column=5),
        Invalid("""
            from torch import load
            def resume(model, checkpoint):
                load(checkpoint)
                return model
            """, line=3),
        Invalid("""
            import torch as th
            def main():
                th.load("model.pt", map_location="cpu"); print("loaded")
            """, line=3, column=5),
        # Assigned, and then nothing is restored from it.
        Invalid("""
            import torch
            def resume(model, optimizer, path):
                checkpoint_1 = torch.load(path)
                return model, optimizer
            """, line=3, column=5),
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
        if isinstance(node.value, cst.Call) and self._counts(node.value):
            self.report(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
            self._check_assigned(node, node.targets[0].target.value, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.target, cst.Name) and node.value is not None:
            self._check_assigned(node, node.target.value, node.value)

    def _check_assigned(self, node: cst.CSTNode, name: str, value: cst.BaseExpression) -> None:
        scope = self.scopes[-1]
        if not isinstance(scope, cst.FunctionDef) or not isinstance(value, cst.Call) or not self._counts(value):
            return
        uses = _Uses()
        scope.visit(uses)
        if uses.unused(name):
            self.report(node, self.UNUSED.format(name=name))

    def _counts(self, call: cst.Call) -> bool:
        """True for a `torch.load` call outside a `try` block and outside `test_*` functions."""
        if self.qualname(call.func) != _LOAD or self.tries[-1]:
            return False
        scope = self.scopes[-1]
        return not (isinstance(scope, cst.FunctionDef) and scope.name.value.startswith("test"))

"""TRN110: with a GradScaler, gradients clipped before ``scaler.unscale_(optimizer)``."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Rule, Valid
from pytest_traincheck.lint.walk import children

_CLIPS = frozenset({"torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_value_",
                    "torch.nn.utils.clip_grad.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_value_"})


_NOT_FOLLOWED = (cst.FunctionDef, cst.ClassDef, cst.For, cst.While)


def _events(statement: cst.CSTNode, rule: Rule) -> list[tuple[str, cst.Call]]:
    """Return the scaler and clip calls of one statement in source order (nested loops and defs excluded)."""
    events: list[tuple[str, cst.Call]] = []
    # Read-only and without recursion (libcst's own visitors rebuild every node they pass).
    stack: list[tuple[cst.CSTNode, bool]] = [(statement, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            # Calls are taken as they are left: the inner `scaler.scale(loss)` before the outer `.backward()`.
            kind = _kind(node, rule)  # type: ignore[arg-type]
            if kind is not None:
                events.append((kind, node))  # type: ignore[arg-type]
            continue
        if isinstance(node, cst.Call):
            stack.append((node, True))
        stack.extend((child, False) for child in reversed(children(node)) if not isinstance(child, _NOT_FOLLOWED))
    return events


def _kind(node: cst.Call, rule: Rule) -> Optional[str]:
    func = node.func
    if isinstance(func, cst.Attribute):
        name = func.attr.value
        inner = func.value
        if name == "backward" and isinstance(inner, cst.Call) and isinstance(inner.func, cst.Attribute) \
                and inner.func.attr.value == "scale":
            return "scaled backward"
        if name == "unscale_":
            return "unscale"
        if name == "step" and _names_scaler(func.value):
            return "step"
    return "clip" if rule.qualname(func) in _CLIPS else None


def _names_scaler(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and "scaler" in node.value.lower() or \
        isinstance(node, cst.Attribute) and "scaler" in node.attr.value.lower()


class ClipBeforeUnscale(Rule):
    """Flags gradient clipping between `scaler.scale(loss).backward()` and `scaler.unscale_(optimizer)`.

    ## What it does
    In one block of statements (an `if` or `with` inside it included), finds a
    `clip_grad_norm_` / `clip_grad_value_` call that follows
    `scaler.scale(loss).backward()` with no `scaler.unscale_(...)` in between.

    ## Why is this bad?
    With mixed precision, `scaler.scale(loss)` multiplies the loss, and so every
    gradient, by the loss scale (65536 by default). Clipping those gradients
    compares the scaled norm with your threshold: the threshold is effectively
    multiplied by the scale and nothing is ever clipped. `scaler.unscale_`
    divides the gradients back first.

    ## Known problems
    Only calls in the same block are ordered; an unscale done in a helper
    function is not seen.

    ## Example
    ```python
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    ```

    ## Use instead
    ```python
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    ```
    """

    CODE = "TRN110"
    MESSAGE = ("Gradients are clipped while still multiplied by the loss scale: call `scaler.unscale_(optimizer)` "
               "before clipping.")
    SEVERITY = "error"
    TRIGGERS = ("scale",)

    VALID = [
        Valid("""
            import torch
            for x, y in loader:
                optimizer.zero_grad()
                scaler.scale(criterion(model(x), y)).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
            """),
        # No scaler: plain clipping.
        Valid("""
            import torch
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            """),
        # A clip after the scaler's step is TRN106's concern, not this rule's.
        Valid("""
            from torch.nn.utils import clip_grad_norm_
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            clip_grad_norm_(model.parameters(), 1.0)
            """),
    ]
    INVALID = [
        Invalid("""
            import torch
            for x, y in loader:
                optimizer.zero_grad()
                scaler.scale(criterion(model(x), y)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
            """, line=5),
        Invalid("""
            from torch.nn.utils import clip_grad_value_
            def train_step(batch):
                self.scaler.scale(loss).backward()
                if self.clip:
                    clip_grad_value_(model.parameters(), 0.5)
                self.scaler.step(self.optimizer)
            """, line=5),
        # Inside a `with` block: reported once.
        Invalid("""
            import torch
            with torch.autocast("cuda"):
                grad_scaler.scale(loss).backward()
                torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
            """, line=4),
    ]

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self._scan(node.body)

    def visit_Module(self, node: cst.Module) -> None:
        self._scan(node.body)

    def _scan(self, statements: tuple[cst.BaseStatement, ...] | list[cst.BaseStatement]) -> None:
        if "backward" not in self.context.source:
            return  # no `scaler.scale(loss).backward()` anywhere: nothing can be flagged
        scaled = False
        for statement in statements:
            if isinstance(statement, _NOT_FOLLOWED):
                continue
            for kind, call in _events(statement, self):
                if kind == "scaled backward":
                    scaled = True
                elif kind in ("unscale", "step"):
                    scaled = False
                elif kind == "clip" and scaled and id(call) not in self._reported():
                    self._reported().add(id(call))  # a `with` block is scanned on its own and from outside
                    self.report(call)

    def _reported(self) -> set[int]:
        if not hasattr(self, "_seen_calls"):
            self._seen_calls: set[int] = set()
        return self._seen_calls

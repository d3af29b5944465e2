"""TRN305: the loss tensor accumulated across iterations, keeping every iteration's graph alive."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid, dotted_name
from pytest_traincheck.analyses.loops import Event, LoopRule, Scope, bare_names

_SAFE_VALUES = frozenset({"item", "detach", "tolist", "numpy", "float", "int"})


class LossAccumulatedAsTensor(LoopRule):
    """Flags `total += loss` (or `losses.append(loss)`) on the tensor that `backward()` is called on.

    ## What it does
    Finds, in a loop that calls `loss.backward()`, `total += loss`,
    `total = total + loss`, `total += loss * n` or `losses.append(loss)` where
    `loss` is the tensor given to `backward()` and is not turned into a number
    or detached first (`loss.item()`, `loss.detach()`, `float(loss)`).

    ## Why is this bad?
    `loss` carries its autograd history. Adding it to a running total builds
    one ever-growing graph that links every iteration's loss: the tensors and
    graph nodes of all past iterations stay alive until the epoch ends, so
    memory grows batch after batch (the PyTorch FAQ's first "my model runs out
    of memory" entry), and on GPU every `+=` is also a device operation.

    It stays quiet when the total is itself back-propagated (summing the
    losses of several tasks or time steps and calling `total.backward()` is
    correct), and when the accumulator is reset inside the same loop.

    ## Known problems
    Only plain names are followed; a loss reassigned to a number
    (`loss = loss.item()`) anywhere in the loop silences the rule for it.

    ## Example
    ```python
    running_loss = 0.0
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss
    ```

    ## Use instead
    ```python
    running_loss += loss.item()
    ```

    ## References
    - [PyTorch FAQ: don't accumulate history across your training loop](https://pytorch.org/docs/stable/notes/faq.html)
    """

    CODE = "TRN305"
    MESSAGE = ("The loss tensor is accumulated with its graph, keeping every iteration's history in memory: "
               "accumulate `loss.item()` (or `loss.detach()`).")
    SEVERITY = "warning"
    TRIGGERS = ("backward",)

    VALID = [
        Valid("""
            running_loss = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                running_loss += loss.item() * x.size(0)
            """),
        # The accumulated multi-task loss is the one back-propagated.
        Valid("""
            for batch in loader:
                total = 0
                for head in heads:
                    loss = head(batch)
                    total = total + loss
                total.backward()
            """),
        # Detached / converted before accumulating.
        Valid("""
            losses = []
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                losses.append(loss.detach().cpu())
                epoch_loss += float(loss)
            """),
        # The loss is rebound to a number first.
        Valid("""
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                loss = loss.item()
                total += loss
            """),
        # Accumulated over time steps, then back-propagated once.
        Valid("""
            for x, y in loader:
                loss = 0
                for t in range(x.size(0)):
                    step_loss = criterion(model(x[t]), y[t])
                    loss += step_loss
                loss.backward()
            """),
        # Kept on self and back-propagated by another method.
        Valid("""
            class Agent:
                def observe(self, batch):
                    for x in batch:
                        loss = self.criterion(self.net(x))
                        loss.backward(retain_graph=True)
                        self.losses.append(loss)

                def learn(self):
                    torch.stack(self.losses).mean().backward()
            """),
        # No backward in the loop (evaluation).
        Valid("""
            for x, y in val_loader:
                loss = criterion(model(x), y)
                total += loss
            """),
    ]
    INVALID = [
        Invalid(
            """
            running_loss = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                running_loss += loss
            """,
            line=7, column=5,
        ),
        Invalid(
            """
            losses = []
            for x, y in loader:
                loss = criterion(model(x), y)
                scaler.scale(loss).backward()
                scaler.step(opt)
                losses.append(loss)
            """,
            line=6, column=5,
        ),
        Invalid(
            """
            for epoch in range(epochs):
                total = 0
                for x, y in loader:
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()
                    total = total + loss * len(x)
            """,
            line=7,
        ),
        Invalid(
            """
            class Trainer:
                def fit(self, loader):
                    for batch in loader:
                        loss = self.model(batch)
                        self.accelerator.backward(loss)
                        self.epoch_loss += loss
            """,
            line=6,
        ),
    ]

    def check(self) -> None:
        if not self.loops.by_function("backward"):
            return
        for event in self.loops.events:
            if event.kind == "accum" and event.expr is not None and event.name:
                name = self._leaked(event)
                if name is not None:
                    self.report(event.node, f"`{name}` is accumulated with its autograd graph, keeping every "
                                f"iteration's history in memory: accumulate `{name}.item()` (or `{name}.detach()`).")

    def _leaked(self, accum: Event) -> Optional[str]:
        """The backward target accumulated as a tensor, if any."""
        func = accum.scope.function()
        backwards = self.loops.by_function("backward").get(id(func), [])
        if not backwards:
            return None
        names = set(bare_names(accum.expr))  # type: ignore[arg-type]
        shared = accum.name.startswith("self.")  # type: ignore[union-attr]
        candidates = [e for f in self.loops.by_function("backward").values() for e in f] if shared else backwards
        if any(accum.name in _names(e.expr) for e in candidates):
            return None  # the accumulator is back-propagated (for self.<name>: in any method)
        for loop in (s for s in accum.scope.ancestors() if s.kind == "loop" and s.inside(func)):
            inside = [e for e in backwards if e.scope.inside(loop) and isinstance(e.expr, cst.Name)]
            hits = [e.expr.value for e in inside if e.expr.value in names]  # type: ignore[union-attr]
            if inside:
                name = accum.name or ""
                if not hits or self._reset(loop, name) or self._converted(loop, hits[0]):
                    return None
                return hits[0]
        return None

    def _reset(self, loop: Scope, name: str) -> bool:
        """True if the accumulator is rebound (not summed) inside ``loop``."""
        return any(e.kind == "assign" and e.name == name and e.scope.inside(loop) and e.expr is not None
                   and not _sums(e, name) for e in self.loops.events)

    def _converted(self, loop: Scope, name: str) -> bool:
        """True if ``name`` is rebound in the loop to a number or a detached tensor."""
        for event in self.loops.events:
            if event.kind == "assign" and event.name == name and event.scope.inside(loop):
                value = event.expr
                if isinstance(value, cst.Call) and _call_word(value) in _SAFE_VALUES:
                    return True
        return False


def _names(expr: Optional[cst.BaseExpression]) -> set[str]:
    """Names a backward target is made of, and the target itself when it is dotted (``self.total``)."""
    if expr is None:
        return set()
    dotted = dotted_name(expr)
    return set(bare_names(expr)) | ({dotted} if dotted else set())


def _sums(event: Event, name: str) -> bool:
    value = event.expr
    return isinstance(value, cst.BinaryOperation) and name in (dotted_name(value.left), dotted_name(value.right))


def _call_word(call: cst.Call) -> Optional[str]:
    func = call.func
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return func.value if isinstance(func, cst.Name) else None

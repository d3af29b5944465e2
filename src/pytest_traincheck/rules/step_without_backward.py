"""TRN103: ``optimizer.step()`` runs before the iteration's ``backward()``, on cleared gradients."""

from __future__ import annotations

from typing import Optional

from pytest_traincheck.lint.rule import Invalid, Valid
from pytest_traincheck.analyses.loops import Event, LoopRule, Scope


class StepWithoutBackward(LoopRule):
    """Flags a loop whose `step()` comes before `backward()` with the gradients cleared in between.

    ## What it does
    Finds loop bodies where an optimizer's `step()` comes before the first
    `backward()` of the iteration and the gradients are cleared on every path
    from the last `backward()` to that step: `opt.zero_grad(); opt.step();
    loss.backward()`, or `opt.step(); ...; loss.backward(); opt.zero_grad()`.

    ## Why is this bad?
    The step then always sees cleared gradients (`None` or zeros): the update
    does nothing (or only applies weight decay and stale momentum), and the
    gradients that `backward()` computes are wiped before any step uses them.
    The model does not learn, with no error.

    A step that applies the previous iteration's gradients and clears them
    right after (`opt.step(); opt.zero_grad(); loss.backward()`) works, one
    iteration late, and is not flagged; neither is `opt.step(closure)`
    (LBFGS and friends compute the gradients inside the step).

    ## Known problems
    Only the loop body's own statements are ordered: loops whose
    `backward()` happens in a helper function, or whose step is inside an
    `if`, are left alone.

    ## Example
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        optimizer.step()
        loss = criterion(model(x), y)
        loss.backward()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```
    """

    CODE = "TRN103"
    MESSAGE = ("`step()` runs before this iteration's `backward()`, on cleared gradients, so it updates "
               "nothing: call `optimizer.step()` after `loss.backward()`.")
    TRIGGERS = ("backward",)

    VALID = [
        Valid("""
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
            """),
        # Delayed step: applies the previous iteration's gradients, then clears them.
        Valid("""
            for x, y in loader:
                optimizer.step()
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
            """),
        # LBFGS: the closure computes the gradients inside step().
        Valid("""
            for x, y in loader:
                optimizer.zero_grad()
                optimizer.step(closure)
                loss = criterion(model(x), y)
                loss.backward()
            """),
        # The backward happens in a helper called before the step.
        Valid("""
            def compute(model, batch):
                loss = model(batch)
                loss.backward()
                return loss

            for batch in loader:
                opt.zero_grad()
                compute(model, batch)
                opt.step()
                extra = aux(batch)
                extra.backward()
            """),
        # The step of a scheduler is not an optimizer step.
        Valid("""
            for x, y in loader:
                optimizer.zero_grad()
                scheduler.step()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
            """),
    ]
    INVALID = [
        Invalid(
            """
            for x, y in loader:
                optimizer.zero_grad()
                optimizer.step()
                loss = criterion(model(x), y)
                loss.backward()
            """,
            line=3, column=5,
        ),
        # Cleared at the end of the iteration, after the backward.
        Invalid(
            """
            for x, y in loader:
                optimizer.step()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.zero_grad()
            """,
            line=2,
        ),
        Invalid(
            """
            for x, y in loader:
                model.zero_grad()
                scaler.step(opt)
                scaler.update()
                with torch.autocast("cuda"):
                    loss = criterion(model(x), y)
                scaler.scale(loss).backward()
            """,
            line=3,
        ),
    ]

    def check(self) -> None:
        for loop in self.loops.loops:
            events = self.loops.walk(loop)
            if any(e.kind == "backward" and not e.scope.inside(loop) for e in events):
                continue  # a helper calls backward: its order is not followed
            step = self._first_step(loop)
            if step is not None and self._cleared(loop, step):
                self.report(step.node)

    def _first_step(self, loop: Scope) -> Optional[Event]:
        """The first direct step, if no backward precedes it and a direct backward follows it."""
        for index, item in enumerate(loop.items):
            if isinstance(item, Event) and self.loops.is_step(item) and not item.closure:
                after = loop.items[index + 1:]
                if any(isinstance(i, Event) and i.kind == "backward" for i in after):
                    return item
                return None
            if any(e.kind == "backward" or self.loops.is_step(e) for e in self.loops.item_events(item)):
                return None
        return None

    def _cleared(self, loop: Scope, step: Event) -> bool:
        """True if a direct clearing for ``step`` runs before it, or after the iteration's last backward."""
        items = loop.items
        keys = {self.loops.opt_key(e, loop) for e in self.loops.walk(loop) if self.loops.is_step(e)}
        position = items.index(step)
        last_backward = max(i for i, item in enumerate(items)
                            if any(e.kind == "backward" for e in self.loops.item_events(item)))
        for index, item in enumerate(items):
            if not (isinstance(item, Event) and item.kind == "clear") or last_backward > index > position:
                continue
            if item.name not in (None, "*") or len(keys) == 1:
                if self.loops.clears(item, step, loop):
                    return True
        return False

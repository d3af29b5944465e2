"""TRN106: gradients clipped before ``backward()`` or after ``step()``, where clipping changes nothing."""

from __future__ import annotations

from typing import Optional

from pytest_traincheck.lint.rule import Invalid, Valid
from pytest_traincheck.analyses.loops import Event, Item, LoopRule, Scope


class ClipOutsideBackwardStep(LoopRule):
    """Flags gradient clipping that runs before `backward()` or after `step()` in a training loop.

    ## What it does
    Finds `clip_grad_norm_` / `clip_grad_value_` (also
    `accelerator.clip_grad_norm_`, `fabric.clip_gradients`) in a loop body
    that calls `backward()` and an optimizer `step()`, where, following the
    iteration from the clip, a `backward()` or a `zero_grad()` comes before the
    next `step()`: `clip; loss.backward(); opt.step()` or
    `loss.backward(); opt.step(); clip` (with the clearing at the start of the
    next iteration). A clip nested in an `if` of the loop body is placed where
    that `if` is.

    ## Why is this bad?
    Clipping rescales the gradients that are in `.grad` at that moment. Before
    `backward()` they are the cleared (or stale) gradients of the previous
    iteration; after `step()` the update has already been applied and the
    gradients are about to be cleared. Either way the step uses unclipped
    gradients and the clipping silently does nothing.

    ## Known problems
    Only statements of the loop body are ordered; a step or backward done by a
    function of another module is not seen (the loop must show its own
    `step()`, directly or in a helper of the same file). Clipping with an
    infinite `max_norm` (to log the norm) is ignored.

    ## Example
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    ```
    """

    CODE = "TRN106"
    MESSAGE = ("Gradients are clipped where clipping has no effect on the update: clip after `loss.backward()` "
               "and before `optimizer.step()`.")
    SEVERITY = "error"
    TRIGGERS = ("clip",)

    VALID = [
        Valid("""
            import torch
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            """),
        # AMP: unscale, clip, then the scaler's step.
        Valid("""
            from torch.nn.utils import clip_grad_norm_
            for x, y in loader:
                scaler.scale(criterion(model(x), y)).backward()
                scaler.unscale_(opt)
                clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
            """),
        # Gradient accumulation: the clip sits with the step.
        Valid("""
            for i, batch in enumerate(loader):
                loss = model(batch).loss / k
                accelerator.backward(loss)
                if (i + 1) % k == 0:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    optimizer.zero_grad()
            """),
        # Measuring the norm after the step (max_norm=inf does not clip).
        Valid("""
            import torch
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            """),
        # The step is in a function of another module: not followed.
        Valid("""
            from torch.nn.utils import clip_grad_norm_
            for batch in loader:
                loss = model(batch)
                loss.backward()
                trainer.apply_update()
                clip_grad_norm_(model.parameters(), 1.0)
            """),
    ]
    INVALID = [
        Invalid(
            """
            import torch
            for x, y in loader:
                optimizer.zero_grad()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
            """,
            line=4, column=5,
        ),
        # After the step, with the clearing at the top of the next iteration.
        Invalid(
            """
            import torch.nn as nn
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                nn.utils.clip_grad_value_(model.parameters(), 0.5)
            """,
            line=7,
        ),
        # Inside an `if` of the loop body, before backward.
        Invalid(
            """
            from torch.nn.utils import clip_grad_norm_
            for batch in loader:
                if args.clip:
                    clip_grad_norm_(model.parameters(), args.clip)
                loss = model(batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            """,
            line=4, column=9,
        ),
    ]

    def check(self) -> None:
        for event in self.loops.events:
            if event.kind != "clip" or not event.exact:
                continue
            loop = _loop_of(event)
            if loop is None or not self._trains(loop):
                continue
            verdict = self._follow(loop, _top_item(event, loop))
            if verdict is not None:
                self.report(event.node, verdict)

    def _trains(self, loop: Scope) -> bool:
        events = self.loops.walk(loop)
        return any(e.kind == "backward" for e in events) and any(self.loops.is_step(e) for e in events)

    def _follow(self, loop: Scope, start: Item) -> Optional[str]:
        """Walk the iteration from ``start``; return a message if a backward or clearing precedes the next step."""
        items = loop.items
        index = items.index(start)
        if any(e.kind in ("backward", "clear") or self.loops.is_step(e)
               for e in self.loops.item_events(start) if e.kind != "clip"):
            return None  # the anchor itself orders things we do not follow
        stepped_before = any(self.loops.is_step(e) for item in items[:index] for e in self.loops.item_events(item))
        for item in items[index + 1:] + items[:index]:
            events = self.loops.item_events(item)
            if any(self.loops.is_step(e) for e in events):
                return None
            direct = isinstance(item, Event)
            if direct and item.kind in ("backward", "clear"):  # type: ignore[union-attr]
                where = "after `step()`" if stepped_before else "before `backward()`"
                return (f"Gradients are clipped {where}, so the update uses unclipped gradients: clip after "
                        "`loss.backward()` and before `optimizer.step()`.")
            if any(e.kind in ("backward", "clear") for e in events):
                return None
        return None


def _loop_of(event: Event) -> Optional[Scope]:
    """The loop whose body holds the clip, through `if`/`else`/`with` blocks only."""
    for scope in event.scope.ancestors():
        if scope.kind == "loop":
            return scope
        if scope.kind not in ("if", "else", "with"):
            return None
    return None


def _top_item(event: Event, loop: Scope) -> Item:
    """The item of the loop body that holds the clip (the clip itself or its `if`/`with`)."""
    item: Item = event
    scope = event.scope
    while scope is not loop:
        item = scope
        scope = scope.parent  # type: ignore[assignment]
    return item

"""TRN102: ``zero_grad()`` between ``backward()`` and ``step()`` wipes the gradients the step needs."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid, dotted_name, receiver
from pytest_traincheck.analyses.loops import Event, LoopRule, Scope, optimizer_models
from pytest_traincheck.analyses.torch_vocabulary import last_name


class ZeroGradBeforeStep(LoopRule):
    """Flags `zero_grad()` called after `backward()` and before the `step()` it empties.

    ## What it does
    Finds, in one straight-line block of statements, `loss.backward()`, then
    `optimizer.zero_grad()` (or `model.zero_grad()` of the model the optimizer
    was built from), then `optimizer.step()`, with no other `backward()`
    between the clearing and the step.

    ## Why is this bad?
    `zero_grad()` resets every gradient (to `None` by default since torch 2.0),
    so the step that follows sees no gradient and does nothing (SGD, Adam skip
    parameters whose `.grad` is `None`; with `set_to_none=False` momentum and
    weight decay still move the weights, but the loss never does). The model
    silently never learns: the order must be zero_grad, forward, loss,
    backward, step.

    ## Known problems
    Only statements of one block are compared: a `zero_grad()` inside an `if`,
    or a `backward()` done in a helper function, is not followed.
    `model.zero_grad()` counts only when the optimizer's construction in the
    file names that model, or when the file steps a single optimizer.

    ## Example
    ```python
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    ```

    ## Use instead
    ```python
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ```
    """

    CODE = "TRN102"
    MESSAGE = ("`zero_grad()` between `backward()` and `step()` erases the gradients the step applies: call "
               "`zero_grad()` before `loss.backward()`.")
    TRIGGERS = ("zero_grad",)

    VALID = [
        Valid("""
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            """),
        # Clearing after the step.
        Valid("""
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            """),
        # GAN: the generator is cleared after the discriminator's backward, before its own backward.
        Valid("""
            errD.backward()
            optimizerD.step()
            netG.zero_grad()
            errG.backward()
            optimizerG.step()
            """),
        # Clearing another optimizer's gradients in between is fine.
        Valid("""
            loss_d.backward()
            opt_g.zero_grad()
            opt_d.step()
            """),
        # A module that is not the optimizer's model.
        Valid("""
            import torch
            opt_d = torch.optim.Adam(disc.parameters())
            loss_d.backward()
            gen.zero_grad()
            opt_d.step()
            """),
        # LBFGS: the closure recomputes the gradients.
        Valid("""
            loss.backward()
            optimizer.zero_grad()
            optimizer.step(closure)
            """),
    ]
    INVALID = [
        Invalid(
            """
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.zero_grad()
                optimizer.step()
            """,
            line=4, column=5,
        ),
        # The model the optimizer was built from.
        Invalid(
            """
            import torch.optim as optim
            opt = optim.SGD(net.parameters(), lr=0.1)
            for x, y in loader:
                out = net(x)
                loss_fn(out, y).backward()
                net.zero_grad()
                opt.step()
            """,
            line=6,
        ),
        # The seed's clipping snippet reordered wrongly, with AMP.
        Invalid(
            """
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            scaler.step(self.optimizer)
            """,
            line=3,
        ),
        # A single optimizer in the file: `model.zero_grad()` clears it.
        Invalid(
            """
            def train_step(model, batch):
                loss = model(batch).loss
                loss.backward()
                model.zero_grad()
                optimizer.step()
            """,
            line=4,
        ),
    ]

    def check(self) -> None:
        if not self.loops.by_function("backward"):
            return
        for event in self.loops.events:
            if event.kind == "clear" and isinstance(event.node, cst.Call) and _called(event.node, "zero_grad"):
                step = self._step_after(event)
                if step is not None and self._same(event, step) and self._backward_before(event):
                    self.report(event.node)

    def _backward_before(self, clear: Event) -> bool:
        items = clear.scope.items
        for item in reversed(items[: items.index(clear)]):
            events = self.loops.item_events(item)
            if any(e.kind == "backward" or self.loops.is_step(e) for e in events):
                return isinstance(item, Event) and item.kind == "backward"
        return False

    def _step_after(self, clear: Event) -> Event | None:
        items = clear.scope.items
        for item in items[items.index(clear) + 1:]:
            if isinstance(item, Event) and self.loops.is_step(item):
                return None if item.closure else item
            if any(e.kind == "backward" or self.loops.is_step(e) for e in self.loops.item_events(item)):
                return None
        return None

    def _same(self, clear: Event, step: Event) -> bool:
        if clear.name not in (None, "*"):
            return self.loops.opt_key(clear, _scope(clear)) == self.loops.opt_key(step, _scope(step)) != "*"
        owner = last_name(dotted_name(receiver(clear.node)))  # type: ignore[arg-type]
        if owner is None:
            return False
        models = optimizer_models(self.loops, step)
        if models is not None:
            return owner in {last_name(m) for m in models}
        stepped = {self.loops.opt_key(e, _scope(e)) for e in self.loops.events if self.loops.is_step(e)}
        return len(stepped) == 1 and "*" not in stepped


def _called(node: cst.Call, name: str) -> bool:
    return isinstance(node.func, cst.Attribute) and node.func.attr.value == name


def _scope(event: Event) -> Scope:
    return event.scope.function()

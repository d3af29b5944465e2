"""TRN104: ``backward()`` on a loss computed under ``torch.no_grad()`` / ``inference_mode()``."""

from __future__ import annotations

from typing import Optional

from pytest_traincheck.lint.rule import Invalid, Valid, dotted_name
from pytest_traincheck.analyses.loops import Event, LoopRule, Scope


class BackwardUnderNoGrad(LoopRule):
    """Flags `backward()` on a value computed with gradient tracking off.

    ## What it does
    Finds `loss.backward()` where `loss` was last assigned inside
    `with torch.no_grad():`, `with torch.inference_mode():`,
    `with torch.set_grad_enabled(False):` or in a function decorated with
    `@torch.no_grad()` / `@torch.inference_mode()` (unless an inner
    `torch.enable_grad()` turns tracking back on), and `backward()` on an
    expression computed in such a block (`criterion(out, y).backward()`).
    A loss computed with tracking on and back-propagated inside a no-grad
    block is fine (`backward()` follows the graph already recorded).

    ## Why is this bad?
    Under `no_grad` no graph is recorded: the loss has no `grad_fn`, so
    `backward()` raises "element 0 of tensors does not require grad", or, when
    someone "fixes" that with `loss.requires_grad_()`, runs and computes no
    gradient for any weight: the model silently stops learning.

    ## Known problems
    A name (`loss`, `self.loss`) is followed from its last assignment within
    one function only: a loss that is a parameter, or computed by a helper
    under `no_grad`, is not followed. `torch.set_grad_enabled(False)` called as
    a statement (not a `with`) is not followed.

    ## Example
    ```python
    with torch.no_grad():
        loss = criterion(model(x), y)
    loss.backward()
    ```

    ## Use instead
    ```python
    loss = criterion(model(x), y)
    loss.backward()
    ```
    """

    CODE = "TRN104"
    MESSAGE = ("`backward()` runs on a value computed under `torch.no_grad()`/`inference_mode()`, which has no "
               "graph: compute the training loss outside the no-grad block.")
    TRIGGERS = ("backward",)

    VALID = [
        # DQN: the target is computed without grad, the loss with it.
        Valid("""
            import torch
            with torch.no_grad():
                target = reward + gamma * target_net(next_state).max(1).values
            loss = criterion(policy_net(state), target)
            loss.backward()
            """),
        Valid("""
            import torch
            with torch.no_grad():
                with torch.enable_grad():
                    loss = model(x).sum()
                    loss.backward()
            """),
        # Reassigned outside the block before the backward.
        Valid("""
            import torch
            with torch.no_grad():
                loss = criterion(model(x), y)
            loss = criterion(model(x), y)
            loss.backward()
            """),
        # Assigned without grad in one branch only.
        Valid("""
            import torch
            if frozen:
                with torch.no_grad():
                    loss = model(x).sum()
            else:
                loss = model(x).sum()
            loss.backward()
            """),
        # Computed with grad, back-propagated under no_grad: the graph exists.
        Valid("""
            import torch
            loss = criterion(model(x), y)
            with torch.no_grad():
                loss.backward()
            """),
        # set_grad_enabled(train): unknown mode.
        Valid("""
            import torch
            with torch.set_grad_enabled(phase == "train"):
                loss = criterion(model(x), y)
                if phase == "train":
                    loss.backward()
            """),
    ]
    INVALID = [
        Invalid(
            """
            import torch
            with torch.no_grad():
                loss = criterion(model(x), y)
            loss.backward()
            """,
            line=4, column=1,
        ),
        Invalid(
            """
            import torch
            with torch.no_grad():
                out = model(x)
                criterion(out, y).backward()
            """,
            line=4, column=5,
        ),
        Invalid(
            """
            import torch
            for x, y in loader:
                with torch.inference_mode():
                    out = model(x)
                    loss = criterion(out, y)
                    loss.backward()
            """,
            line=6, column=9,
        ),
        Invalid(
            """
            import torch

            @torch.no_grad()
            def train_step(model, x, y, opt):
                opt.zero_grad()
                loss = model(x, y)
                loss.backward()
                opt.step()
            """,
            line=7,
        ),
        Invalid(
            """
            from torch import set_grad_enabled
            def step(model, x):
                with set_grad_enabled(False):
                    loss = model(x).mean()
                loss.requires_grad_()
                loss.backward()
            """,
            line=6,
        ),
    ]

    def check(self) -> None:
        for event in self.loops.events:
            if event.kind != "backward" or event.expr is None:
                continue
            name = dotted_name(event.expr)
            if name is None:  # an expression computed right here
                if self.loops.grad_mode(event.scope) == "off":
                    self.report(event.node)
                continue
            binding = self._last_binding(event, name)
            if binding is not None and self.loops.grad_mode(binding.scope) == "off" \
                    and _straight(binding.scope, event.scope):
                self.report(event.node, f"`{name}` is computed under `torch.no_grad()`/`inference_mode()` and "
                            "has no graph, so `backward()` trains nothing: compute it outside the no-grad block.")

    def _last_binding(self, use: Event, name: str) -> Optional[Event]:
        assigns = self.loops.by_function("assign").get(id(use.scope.function()), [])
        found = [e for e in assigns if e.name == name and e.seq < use.seq]
        return found[-1] if found else None


def _straight(binding: Scope, use: Scope) -> bool:
    """True if every block around ``binding`` (``with`` blocks aside) also holds ``use``."""
    for block in binding.ancestors():
        if block.kind in ("def", "module"):
            return True
        if block.kind != "with" and not use.inside(block):
            return False
    return True

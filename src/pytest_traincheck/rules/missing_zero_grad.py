"""TRN101: a training loop that steps an optimizer but never clears its gradients."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Valid
from pytest_traincheck.analyses.loops import Event, LoopRule, Scope


class MissingZeroGrad(LoopRule):
    """Flags training loops that call `backward()` and `step()` but never `zero_grad()`.

    ## What it does
    Finds `for`/`while` loops whose iterations call `backward()` (also
    `scaler.scale(loss).backward()`, `accelerator.backward(loss)`,
    `torch.autograd.backward`) and an optimizer's `step()` (or
    `scaler.step(optimizer)`), counting helper functions of the same file that
    the loop calls, but never clear that optimizer's gradients: no
    `optimizer.zero_grad()`, `model.zero_grad()`, `p.grad = None` or
    `p.grad.zero_()` anywhere in the loop. Clearing before the loop only is
    flagged too. With several optimizers (GANs), each stepped optimizer needs a
    clearing: `opt_d.zero_grad()` does not clear for `opt_g.step()`, while any
    `module.zero_grad()` is taken to clear them all.

    ## Why is this bad?
    `backward()` adds into `.grad`; it does not overwrite it. Without clearing,
    the step at iteration *n* applies the sum of the gradients of iterations
    1..*n*, so the effective learning rate grows with every batch and training
    diverges or stalls, silently.

    Gradient accumulation is correct code and stays quiet: clearing only
    every *k* iterations (`if (i + 1) % k == 0: opt.step(); opt.zero_grad()`)
    still clears inside the loop.

    A loop whose step runs inside an inner loop that calls `backward()` itself
    is judged by that inner loop (a WGAN's critic loop), and only the
    innermost loop is reported.

    ## Known problems
    A clearing anywhere in the loop counts, even one that runs on a condition
    unrelated to the step. Clearing done by a function from another module is
    seen only if its name says so (`zero_grads(model)`, `self._clear_grad()`).
    Optimizers are recognised by name (`optimizer`, `opt_g`, `optimizerD`, or a
    name bound to a `torch.optim` constructor in the file).

    ## Example
    ```python
    for x, y in loader:
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
        optimizer.step()
    ```

    ## Fix safety
    Unsafe: inserting `optimizer.zero_grad()` at the top of the loop body
    changes the training (that is the point), and the loop may have meant to
    accumulate gradients over several iterations. Offered only when the loop
    body itself calls `backward()` and `step()`.

    ## References
    - [PyTorch FAQ: zeroing out gradients](https://pytorch.org/tutorials/recipes/recipes/zeroing_out_gradients.html)
    """

    CODE = "TRN101"
    MESSAGE = ("The optimizer steps with gradients that are never cleared in this loop: call "
               "`optimizer.zero_grad()` once per iteration, before `backward()`.")
    FIX_TITLE = "Insert `optimizer.zero_grad()` at the top of the loop body"
    FIX_SAFE = False
    TRIGGERS = ("backward",)

    VALID = [
        # The seed's reference loop.
        Valid("""
            for epoch in range(num_epochs):
                for batch_idx, (data, targets) in enumerate(train_loader):
                    scores = model(data)
                    loss = criterion(scores, targets)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            """),
        # Gradient accumulation: clear every k iterations, with the step.
        Valid("""
            for i, (x, y) in enumerate(loader):
                loss = criterion(model(x), y) / k
                loss.backward()
                if (i + 1) % k == 0:
                    optimizer.step()
                    optimizer.zero_grad()
            """),
        # DCGAN: each network clears its own gradients through the module.
        Valid("""
            for i, data in enumerate(dataloader):
                netD.zero_grad()
                errD_real = criterion(netD(real), label)
                errD_real.backward()
                errD_fake = criterion(netD(fake.detach()), label)
                errD_fake.backward()
                optimizerD.step()
                netG.zero_grad()
                errG = criterion(netD(fake), label)
                errG.backward()
                optimizerG.step()
            """),
        # Clearing by hand, and clearing inside a helper the loop calls.
        Valid("""
            for x, y in loader:
                for p in model.parameters():
                    p.grad = None
                loss_fn(model(x), y).backward()
                opt.step()
            """),
        Valid("""
            def reset(optimizer):
                optimizer.zero_grad(set_to_none=True)

            for x, y in loader:
                reset(optimizer)
                loss_fn(model(x), y).backward()
                optimizer.step()
            """),
        # AMP with a GradScaler, clearing after the step.
        Valid("""
            for x, y in loader:
                with torch.autocast("cuda"):
                    loss = criterion(model(x), y)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
            """),
        # LBFGS: the closure clears.
        Valid("""
            for x, y in loader:
                def closure():
                    optimizer.zero_grad()
                    loss = criterion(model(x), y)
                    loss.backward()
                    return loss
                optimizer.step(closure)
            """),
        # A scheduler step is not an optimizer step; RL env.step neither.
        Valid("""
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                scheduler.step()
                obs, reward, done, info = env.step(action)
            """),
        # An autograd Function's backward called by name is not a loss.
        Valid("""
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                MyRelu.backward(ctx, grad_out)
                optimizer.step()
            """),
        # Several optimizers cleared in a loop over them.
        Valid("""
            for batch in loader:
                for opt in (opt_g, opt_d):
                    opt.zero_grad()
                loss = compute(batch)
                loss.backward()
                opt_g.step()
                opt_d.step()
            """),
    ]
    INVALID = [
        Invalid(
            """
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
            """,
            line=1, column=1,
            expected_fix="""
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
            """,
        ),
        # zero_grad before the loop only.
        Invalid(
            """
            optimizer.zero_grad()
            while step < total:
                loss = model(batch).mean()
                loss.backward()
                optimizer.step()
                step += 1
            """,
            line=2,
            expected_fix="""
            optimizer.zero_grad()
            while step < total:
                optimizer.zero_grad()
                loss = model(batch).mean()
                loss.backward()
                optimizer.step()
                step += 1
            """,
        ),
        # GAN: the generator's optimizer is never cleared.
        Invalid(
            """
            for real in loader:
                opt_d.zero_grad()
                d_loss = disc_loss(real)
                d_loss.backward()
                opt_d.step()
                g_loss = gen_loss()
                g_loss.backward()
                opt_g.step()
            """,
            line=1,
            expected_fix="""
            for real in loader:
                opt_g.zero_grad()
                opt_d.zero_grad()
                d_loss = disc_loss(real)
                d_loss.backward()
                opt_d.step()
                g_loss = gen_loss()
                g_loss.backward()
                opt_g.step()
            """,
        ),
        # WGAN: the critic's inner loop clears its optimizer; the generator's step does not.
        Invalid(
            """
            for real in loader:
                for _ in range(n_critic):
                    opt_d.zero_grad()
                    critic_loss(real).backward()
                    opt_d.step()
                gen_loss().backward()
                opt_g.step()
            """,
            line=1,
            expected_fix="""
            for real in loader:
                opt_g.zero_grad()
                for _ in range(n_critic):
                    opt_d.zero_grad()
                    critic_loss(real).backward()
                    opt_d.step()
                gen_loss().backward()
                opt_g.step()
            """,
        ),
        # The step happens in a helper of the same file: reported, no fix.
        Invalid(
            """
            class Trainer:
                def train_step(self, x, y):
                    loss = self.criterion(self.model(x), y)
                    loss.backward()
                    self.optimizer.step()

                def fit(self, loader):
                    for x, y in loader:
                        self.train_step(x, y)
            """,
            line=8, column=9,
        ),
        # AMP without clearing: the fix clears the optimizer given to the scaler.
        Invalid(
            """
            for x, y in loader:
                scaler.scale(criterion(model(x), y)).backward()
                scaler.step(self.opt)
                scaler.update()
            """,
            expected_fix="""
            for x, y in loader:
                self.opt.zero_grad()
                scaler.scale(criterion(model(x), y)).backward()
                scaler.step(self.opt)
                scaler.update()
            """,
        ),
        # A GAN's capitalised losses: the discriminator's gradients are never cleared.
        Invalid(
            """
            for real, _ in loader:
                optimizer_G.zero_grad()
                G_loss = adversarial(D(G(z)), valid)
                G_loss.backward()
                optimizer_G.step()
                D_loss = adversarial(D(real), valid) + adversarial(D(G(z).detach()), fake)
                D_loss.backward()
                optimizer_D.step()
            """,
            line=1, column=1,
            expected_fix="""
            for real, _ in loader:
                optimizer_D.zero_grad()
                optimizer_G.zero_grad()
                G_loss = adversarial(D(G(z)), valid)
                G_loss.backward()
                optimizer_G.step()
                D_loss = adversarial(D(real), valid) + adversarial(D(G(z).detach()), fake)
                D_loss.backward()
                optimizer_D.step()
            """,
        ),
    ]

    def check(self) -> None:
        for loop in self.loops.loops:
            events = self.loops.walk(loop)
            if not any(e.kind == "backward" for e in events):
                continue
            clears = [e for e in events if e.kind == "clear"]
            missing: dict[str, Event] = {}
            for step in (e for e in events if self.loops.is_step(e)):
                if not any(self.loops.clears(clear, step, loop) for clear in clears) \
                        and not self._inner_training_loop(step, loop):
                    missing.setdefault(self.loops.opt_key(step, loop), step)
            if missing:
                names = [e.name for e in missing.values()]
                shown = names[0] if len(names) == 1 and names[0] != "*" else "optimizer"
                message = (f"`{shown}.step()` applies gradients that are never cleared in this loop: call "
                           f"`{shown}.zero_grad()` once per iteration, before `backward()`.")
                self.report(loop.node, message, fix=self._fix(loop, events, list(missing.values())))

    def _inner_training_loop(self, step: Event, loop: Scope) -> bool:
        """True if ``step`` runs in a loop nested in ``loop`` that calls backward itself (judged on its own)."""
        for scope in step.scope.ancestors():
            if scope is loop:
                return False
            if scope.kind == "loop" and not loop.inside(scope) \
                    and any(e.kind == "backward" for e in self.loops.walk(scope)):
                return True
        return False

    def _fix(self, loop: Scope, events: list[Event], steps: list[Event]):  # type: ignore[no-untyped-def]
        body = loop.node.body  # type: ignore[attr-defined]
        direct_backward = any(e.kind == "backward" and e.scope is loop for e in events)
        if not isinstance(body, cst.IndentedBlock) or not direct_backward:
            return None
        if any(s.scope is not loop or not s.name or s.name == "*" for s in steps):
            return None
        statements = [cst.parse_statement(f"{name}.zero_grad()\n") for name in dict.fromkeys(s.name for s in steps)]

        def fix(node: cst.CSTNode) -> cst.CSTNode:
            block = node.body  # type: ignore[attr-defined]
            return node.with_changes(body=block.with_changes(body=[*statements, *block.body]))

        return fix

"""TRN301: an evaluation function leaves the model in eval mode inside the training loop."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.analyses.evalflow import EvalFlow, EvalFlowRule, Scope
from pytest_traincheck.lint.rule import Invalid, Valid, dotted_name

_TRAIN_LOOP = """
            for epoch in range(epochs):
                for x, y in train_loader:
                    optimizer.zero_grad()
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()
                print(check_accuracy(test_loader, model))
            """


_INLINE = ("The model is switched to eval mode inside the training loop and this loop never switches it back, so "
           "from the next iteration on it trains in eval mode (dropout off, BatchNorm frozen): call `model.train()` "
           "at the start of each epoch.")


class EvalWithoutTrainToggle(EvalFlowRule):
    """Flags an evaluation function that calls `model.eval()` and never switches back, called from a training loop.

    ## What it does
    Finds functions that call `<m>.eval()` (or `<m>.train(False)`) and never
    call `.train()` / `.train(True)` / `.train(was_training)` afterwards, when
    the file calls them from a loop that trains: a loop that calls
    `backward()` or an optimizer's `step()`, directly or through a function of
    the file (`train_one_epoch(...)`). The loop is quiet when it switches the
    model back itself: `model.train()` anywhere in the loop, or a helper it
    calls that does (pytorch/examples' `train()` starts with `model.train()`).
    The finding is at the `.eval()` call.

    It also flags `model.eval()` written inline in a loop that trains that
    model (the epoch loop: train, then `model.eval()` and a test loop) when
    nothing in that loop calls `.train()` again.

    ## Why is this bad?
    `eval()` is a mode switch, not a scope: after the evaluation function
    returns, the next training steps run with dropout off and BatchNorm using
    (and no longer updating) its running statistics. Nothing fails; the model
    just trains worse. The seed's `check_accuracy` ends with `model.train()`
    for this reason.

    ## Known problems
    Only functions of the same file called by name (`evaluate(...)`,
    `self.evaluate(...)`) are followed; an early `return` before the final
    `.train()` is not noticed, and a `.train()` anywhere in the function (even
    before the `.eval()`, as when freezing BatchNorm layers during training)
    counts as restoring. Functions that train themselves are never flagged.

    ## Example
    ```python
    def check_accuracy(loader, model):
        model.eval()
        with torch.no_grad():
            ...
        return correct / total

    for epoch in range(epochs):
        for x, y in train_loader:
            ...
            loss.backward()
            optimizer.step()
        check_accuracy(test_loader, model)
    ```

    ## Use instead
    ```python
    def check_accuracy(loader, model):
        model.eval()
        with torch.no_grad():
            ...
        model.train()  # toggle back to training mode
        return correct / total
    ```
    """

    CODE = "TRN301"
    MESSAGE = ("The model is switched to eval mode here and never back, but this function is called from the "
               "training loop: call `model.train()` before returning (or at the top of each training epoch).")
    SEVERITY = "error"
    TRIGGERS = (".eval()", ".train(False)", ".train(mode=False)")

    VALID = [
        # The seed's check_accuracy, with the final model.train().
        Valid("""
            import torch

            def check_accuracy(loader, model):
                correct = 0.
                total = 0.
                model.eval()
                with torch.no_grad():
                    for x, y in loader:
                        _, y_pred = model(x).max(1)
                        correct += (y_pred == y).sum().item()
                        total += y_pred.size(0)
                model.train()   # Toggle model back to train
                return correct / total
            """ + _TRAIN_LOOP.lstrip()),
        # pytorch/examples mnist: train() calls model.train() at its start.
        Valid("""
            import torch

            def train(model, loader, optimizer):
                model.train()
                for data, target in loader:
                    optimizer.zero_grad()
                    loss = F.nll_loss(model(data), target)
                    loss.backward()
                    optimizer.step()

            def test(model, loader):
                model.eval()
                with torch.no_grad():
                    for data, target in loader:
                        output = model(data)

            for epoch in range(1, epochs + 1):
                train(model, train_loader, optimizer)
                test(model, test_loader)
                scheduler.step()
            """),
        # The previous mode is restored.
        Valid("""
            def evaluate(model, loader):
                was_training = model.training
                model.eval()
                acc = accuracy(model, loader)
                model.train(was_training)
                return acc

            for epoch in range(epochs):
                for x, y in train_loader:
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()
                evaluate(model, val_loader)
            """),
        # The epoch loop switches back itself.
        Valid("""
            def evaluate(model, loader):
                model.eval()
                return accuracy(model, loader)

            for epoch in range(epochs):
                model.train()
                for x, y in train_loader:
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()
                evaluate(model, val_loader)
            """),
        # Called once after training: leaving eval mode on is fine.
        Valid("""
            def evaluate(model, loader):
                model.eval()
                return accuracy(model, loader)

            for epoch in range(epochs):
                for x, y in train_loader:
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()
            evaluate(model, test_loader)
            """),
        # A training step that freezes BatchNorm on purpose.
        Valid("""
            def train_step(model, x, y):
                model.train()
                model.backbone.bn.eval()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()

            for x, y in loader:
                train_step(model, x, y)
            """),
        # Inline eval() in the epoch loop, undone at the top of the next epoch.
        Valid("""
            import torch

            for epoch in range(epochs):
                model.train()
                for x, y in train_loader:
                    criterion(model(x), y).backward()
                    optimizer.step()
                model.eval()
                for x, y in test_loader:
                    correct += (model(x).argmax(1) == y).sum()
            """),
        # Freezing one BatchNorm layer inside the loop on purpose.
        Valid("""
            import torch

            model.train()
            for x, y in train_loader:
                model.backbone.bn1.eval()
                criterion(model(x), y).backward()
                optimizer.step()
            """),
    ]
    INVALID = [
        # The seed's check_accuracy without the final model.train().
        Invalid("""
            import torch

            def check_accuracy(loader, model):
                correct = 0.
                total = 0.
                model.eval()
                with torch.no_grad():
                    for x, y in loader:
                        _, y_pred = model(x).max(1)
                        correct += (y_pred == y).sum().item()
                        total += y_pred.size(0)
                return correct / total
            """ + _TRAIN_LOOP.lstrip(), line=6, column=5),
        # Evaluated every 100 steps inside the batch loop; model.train() only at the top of the epoch.
        Invalid("""
            def validate(net, loader):
                net.train(False)
                return sum(score(net(x), y) for x, y in loader)

            for epoch in range(epochs):
                net.train()
                for step, (x, y) in enumerate(train_loader):
                    loss = criterion(net(x), y)
                    loss.backward()
                    optimizer.step()
                    if step % 100 == 0:
                        validate(net, val_loader)
            """, line=2, column=5),
        # A method called through self, from a loop whose training step is a helper.
        Invalid("""
            class Trainer:
                def train_epoch(self):
                    for x, y in self.loader:
                        self.opt.zero_grad()
                        self.loss(x, y).backward()
                        self.opt.step()

                def evaluate(self):
                    self.model.eval()
                    return self.metric(self.model)

                def fit(self):
                    for epoch in range(self.epochs):
                        self.train_epoch()
                        self.evaluate()
            """, line=9, column=9),
        # eval() inline in the epoch loop; the next epoch trains the Dropout model in eval mode.
        Invalid("""
            import torch.nn as nn

            model = nn.Sequential(nn.Linear(784, 400), nn.Dropout(0.5), nn.Linear(400, 10))
            for epoch in range(epochs):
                for img, label in train_loader:
                    loss = criterion(model(img), label)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                model.eval()
                for img, label in test_loader:
                    eval_loss += criterion(model(img), label).item()
            """, line=10, column=5),
    ]

    def check(self, flow: EvalFlow) -> None:
        for key, scopes in flow.functions.items():
            scope = scopes[0]
            if len(scopes) != 1 or not scope.evals or scope.toggles or scope.training:
                continue
            if any(self._spoils_training(flow, site.loops, key) for _, site in flow.call_sites(key)):
                self.report(scope.evals[0])
        for scope in flow.done:
            for call in scope.evals:
                self._inline(flow, scope, call)

    def _inline(self, flow: EvalFlow, scope: Scope, call: cst.Call) -> None:
        """Flag ``model.eval()`` written in a training loop (the epoch loop) that never calls ``.train()``."""
        around = [loop for loop in scope.loops if any(e is call for e in loop.evals)]
        training = [loop for loop in around if flow.trains(loop)]
        if not training:
            return
        loop = training[-1]  # the innermost loop whose next steps run after this eval()
        model = dotted_name(call.func.value) if isinstance(call.func, cst.Attribute) else None
        called = {dotted_name(c.func) for c, _ in loop.model_calls}
        if model is None or model not in called or flow.restores_train(loop, ("", "")):
            return
        self.report(call, _INLINE)

    @staticmethod
    def _spoils_training(flow: EvalFlow, loops: tuple, key: tuple[str, str]) -> bool:  # type: ignore[type-arg]
        for loop in reversed(loops):  # innermost first: the loop whose next steps run in eval mode
            if flow.trains(loop):
                return not flow.restores_train(loop, key)
        return False

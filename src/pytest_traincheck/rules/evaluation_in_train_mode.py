"""TRN302: an evaluation loop under no_grad that never puts the model in eval mode."""

from __future__ import annotations

import re

from pytest_traincheck.analyses.evalflow import (
    EvalFlow,
    EvalFlowRule,
    Scope,
    looks_like_eval_function,
    looks_like_inference_function,
)
from pytest_traincheck.lint.rule import Invalid, Valid


# A model whose forward depends on the mode: dropout or batch normalization somewhere in the file.
_MODE_LAYERS = re.compile(r"Dropout|BatchNorm|\bdropout\(|batch_norm\(")
_NEVER_EVAL = ("The model has dropout or BatchNorm and is never switched to eval mode, so {} predicts in training "
               "mode (random dropout, batch statistics): call `model.eval()` before it and `model.train()` after.")


class EvaluationInTrainMode(EvalFlowRule):
    """Flags an evaluation loop under `torch.no_grad()` with no `model.eval()` before it.

    ## What it does
    Finds loops that call a model (a callee named like `model`, `net`,
    `self.encoder`, `self`) inside `with torch.no_grad():` /
    `torch.inference_mode()` / `torch.set_grad_enabled(False)` or in a function
    decorated with `@torch.no_grad()` / `@torch.inference_mode()`, when the
    function looks like evaluation (its name contains eval / test / valid /
    accuracy / check, or the loop iterates something named like
    `test_loader` / `val_data`) and nothing switches the model to eval mode:
    no `.eval()` / `.train(False)` in the function, none in the module body,
    and no call of the function preceded by a `.eval()` in its caller. The
    finding is at the `with` statement (or the decorated `def`).

    In a file that builds a model with dropout or BatchNorm and never calls
    `.eval()` anywhere, it also flags, with or without `no_grad`, a
    `predict()` / `infer()` function that runs the model (`model(x)` or
    `model.forward(x)`), and a loop over test or validation data that runs
    the model (the test batch forwarded inline in the training loop).

    ## Why is this bad?
    `no_grad` only stops recording gradients; it does not change the model's
    mode. In training mode dropout still drops units at random and BatchNorm
    normalizes with the batch's statistics (and updates its running ones with
    test data), so the reported accuracy is noisy, too low, and depends on the
    batch size.

    ## Known problems
    Models without dropout or BatchNorm behave the same in both modes; the rule
    cannot tell them apart and may flag them. A model put in eval mode in
    another file before the function is called is not seen, and a `.eval()`
    anywhere in the module body silences the rule for the file.

    ## Example
    ```python
    def evaluate(model, loader):
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
    ```

    ## Use instead
    ```python
    def evaluate(model, loader):
        model.eval()
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
        model.train()
    ```
    """

    CODE = "TRN302"
    MESSAGE = ("Evaluation runs in training mode (dropout on, BatchNorm using batch statistics): "
               "call `model.eval()` before this loop and `model.train()` after it.")
    TRIGGERS = ("no_grad", "inference_mode", "set_grad_enabled", "Dropout", "BatchNorm", "dropout")

    VALID = [
        # predict() after model.eval() somewhere in the file.
        Valid("""
            import torch.nn as nn
            model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))

            def predict(model, x):
                model.eval()
                return model(x).argmax(1)
            """),
        # No dropout or BatchNorm: both modes compute the same.
        Valid("""
            import torch.nn as nn
            model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

            def predict(model, x):
                return model(x).argmax(1)
            """),
        # The model's own predict method leaves the mode to its caller.
        Valid("""
            import torch.nn as nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.drop = nn.Dropout(0.5)

                def predict(self, x):
                    return self(x).argmax(1)
            """),
        Valid("""
            import torch

            def evaluate(model, loader):
                model.eval()
                with torch.no_grad():
                    for x, y in loader:
                        correct += (model(x).argmax(1) == y).sum().item()
                model.train()
            """),
        # The caller switches the model (the seed's usage).
        Valid("""
            import torch

            def check_accuracy(loader, model):
                with torch.no_grad():
                    for x, y in loader:
                        _, y_pred = model(x).max(1)

            model.eval()
            check_accuracy(test_loader, model)
            model.train()
            """),
        # Not evaluation: gathering features from a training loader under no_grad.
        Valid("""
            import torch

            def extract_features(model, loader):
                with torch.no_grad():
                    for x, _ in loader:
                        feats.append(model(x))
            """),
        # Inference-mode decorator with eval in the body.
        Valid("""
            import torch

            @torch.inference_mode()
            def test(net, test_loader):
                net.eval()
                for x, y in test_loader:
                    out = net(x)
            """),
        # No model call in the loop.
        Valid("""
            import torch

            def evaluate(preds, loader):
                with torch.no_grad():
                    for x, y in loader:
                        total += (preds == y).sum()
            """),
    ]
    INVALID = [
        # predict() on a model with dropout, never switched to eval (a tutorial fixed later).
        Invalid("""
            import torch
            from torch import nn

            def build_model(n_in, n_out):
                model = nn.Sequential()
                model.add_module("fc", nn.Linear(n_in, 512))
                model.add_module("drop", nn.Dropout(0.2))
                model.add_module("out", nn.Linear(512, n_out))
                return model

            def train(model, loss, optimizer, x, y):
                optimizer.zero_grad()
                output = loss.forward(model.forward(x), y)
                output.backward()
                optimizer.step()

            def predict(model, x):
                output = model.forward(x)
                return output.data.numpy().argmax(axis=1)
            """, line=18, column=14),
        # The test batch forwarded inline in the training loop.
        Invalid("""
            import torch
            import torch.nn as nn

            classifier = nn.Sequential(nn.Linear(3, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
            for epoch in range(epochs):
                for points, target in train_loader:
                    optimizer.zero_grad()
                    loss = criterion(classifier(points), target)
                    loss.backward()
                    optimizer.step()
                for points, target in test_loader:
                    pred = classifier(points)
                    correct += pred.argmax(1).eq(target).sum().item()
            """, line=12, column=16),
        Invalid("""
            import torch

            def check_accuracy(loader, model):
                correct = 0
                with torch.no_grad():
                    for x, y in loader:
                        _, y_pred = model(x).max(1)
                        correct += (y_pred == y).sum().item()
                return correct
            """, line=5, column=5),
        Invalid("""
            import torch

            @torch.no_grad()
            def validate(net, val_loader):
                for x, y in val_loader:
                    loss = criterion(net(x), y)
            """, line=4, column=1),
        # Not named like evaluation, but iterating the test loader.
        Invalid("""
            import torch

            def run(model):
                with torch.set_grad_enabled(False):
                    for x, y in test_loader:
                        preds = model(x).argmax(1)
            """, line=4, column=5),
    ]

    def check(self, flow: EvalFlow) -> None:
        if flow.module_scope().evals or flow.module_scope().eval_context:
            return  # a model switched to eval at module level: unknowable which one
        if _MODE_LAYERS.search(self.context.source) and not any(s.evals or s.eval_context for s in flow.done):
            self._never_switched(flow)
        for scope in flow.done:
            if scope.evals or scope.eval_context or self._caller_evaluates(flow, scope):
                continue
            reported: set[int] = set()
            for loop in scope.loops:
                under = [call for call, no_grad in loop.model_calls if no_grad]
                if loop.no_grad is None or not under or id(loop.no_grad) in reported:
                    continue
                if loop.eval_data or looks_like_eval_function(scope.name, broad=True):
                    reported.add(id(loop.no_grad))
                    self.report(loop.no_grad)

    def _never_switched(self, flow: EvalFlow) -> None:
        """Flag inference functions and test-data loops of a file whose mode-dependent model never leaves training."""
        for scope in flow.done:
            if (looks_like_inference_function(scope.name) and scope.model_calls
                    and not (scope.training or scope.toggles)):
                self.report(scope.model_calls[0], _NEVER_EVAL.format(f"`{scope.name}()`"))
                continue
            for loop in scope.loops:
                if loop.eval_data and loop.no_grad is None and not loop.training and loop.model_calls:
                    self.report(loop.model_calls[0][0], _NEVER_EVAL.format("this loop over evaluation data"))

    @staticmethod
    def _caller_evaluates(flow: EvalFlow, scope: Scope) -> bool:
        return scope.key is not None and any(site.eval_before for _, site in flow.call_sites(scope.key))

"""TRN302: an evaluation loop under no_grad that never puts the model in eval mode."""

from __future__ import annotations

from pytest_traincheck.analyses.evalflow import EvalFlow, EvalFlowRule, Scope, looks_like_eval_function
from pytest_traincheck.lint.rule import Invalid, Valid


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
    TRIGGERS = ("no_grad", "inference_mode", "set_grad_enabled")

    VALID = [
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

    @staticmethod
    def _caller_evaluates(flow: EvalFlow, scope: Scope) -> bool:
        return scope.key is not None and any(site.eval_before for _, site in flow.call_sites(scope.key))

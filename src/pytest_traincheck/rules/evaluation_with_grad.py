"""TRN303: an evaluation loop that runs the model with gradient tracking on."""

from __future__ import annotations

from pytest_traincheck.analyses.evalflow import EvalFlow, EvalFlowRule, Scope, is_test_file, looks_like_eval_function
from pytest_traincheck.lint.rule import Invalid, Valid


class EvaluationWithGrad(EvalFlowRule):
    """Flags an evaluation loop that calls the model with gradient tracking on.

    ## What it does
    Finds loops that call a model (a callee named like `model`, `net`,
    `self.encoder`, `self`) outside any `torch.no_grad()` /
    `torch.inference_mode()` / `torch.set_grad_enabled(False)`, in a function
    named like evaluation (`eval*`, `test*`, `valid*`, `val`, `*accuracy*`) or
    iterating something named like evaluation data (`test_loader`,
    `val_dataloader`). The finding is at the loop.

    It stays quiet when the function is decorated with `@torch.no_grad()` /
    `@torch.inference_mode()`, calls `backward()`, an optimizer's `step()` or
    anything touching grad mode or `requires_grad` (adversarial evaluation and
    saliency maps need gradients), when a caller in the file calls it under
    `no_grad`, when the module disables grad globally, and for `test_*`
    functions in pytest files.

    ## Why is this bad?
    With grad mode on, every forward pass records the autograd graph and keeps
    every intermediate activation alive until the outputs are dropped. An
    evaluation loop then uses several times the memory it needs (often running
    out of GPU memory at a batch size training handled), runs slower, and if
    the outputs or losses are accumulated (`total_loss += loss`), keeps every
    batch's graph alive until the loop ends.

    ## Known problems
    Callers in other files that wrap the call in `no_grad` are not seen, and a
    custom context manager that disables grad under another name is not
    recognized (one whose name contains `no_grad` / `inference_mode` is).

    ## Example
    ```python
    def evaluate(model, val_loader):
        model.eval()
        for x, y in val_loader:
            total_loss += criterion(model(x), y)
    ```

    ## Use instead
    ```python
    @torch.no_grad()
    def evaluate(model, val_loader):
        model.eval()
        for x, y in val_loader:
            total_loss += criterion(model(x), y).item()
    ```
    """

    CODE = "TRN303"
    MESSAGE = ("This evaluation loop runs the model with gradient tracking on, storing every activation for a "
               "backward pass that never comes: wrap it in `with torch.no_grad():` (or `torch.inference_mode()`).")
    SEVERITY = "warning"
    TRIGGERS = ("eval", "test", "val", "accuracy")

    VALID = [
        Valid("""
            import torch

            def evaluate(model, loader):
                model.eval()
                with torch.no_grad():
                    for x, y in loader:
                        out = model(x)
            """),
        Valid("""
            import torch

            @torch.inference_mode()
            def test(net, test_loader):
                for x, y in test_loader:
                    out = net(x)
            """),
        # Adversarial evaluation needs gradients.
        Valid("""
            def test(model, test_loader, epsilon):
                for data, target in test_loader:
                    data.requires_grad = True
                    output = model(data)
                    loss = F.nll_loss(output, target)
                    model.zero_grad()
                    loss.backward()
            """),
        # The caller disables grad.
        Valid("""
            import torch

            def validate(model, val_loader):
                for x, y in val_loader:
                    acc += (model(x).argmax(1) == y).sum()

            with torch.no_grad():
                validate(model, val_loader)
            """),
        # The no_grad block sits inside the loop, around the model call.
        Valid("""
            import torch

            for x, y in val_loader:
                x = x.cuda()
                with torch.no_grad():
                    out = model(x)
            """),
        # Grad disabled globally in an inference script.
        Valid("""
            import torch

            torch.set_grad_enabled(False)
            for x, y in test_loader:
                out = model(x)
            """),
    ]
    INVALID = [
        Invalid("""
            def evaluate(model, val_loader):
                model.eval()
                for x, y in val_loader:
                    total_loss += criterion(model(x), y)
            """, line=3, column=5),
        Invalid("""
            def check_accuracy(loader, model):
                model.eval()
                for x, y in loader:
                    _, y_pred = model(x).max(1)
                model.train()
            """, line=3, column=5),
        Invalid("""
            model.eval()
            for i, (images, labels) in enumerate(test_loader):
                outputs = model(images)
                correct += (outputs.argmax(1) == labels).sum().item()
            """, line=2, column=1),
    ]

    def check(self, flow: EvalFlow) -> None:
        if flow.module_scope().grad_mentions:
            return  # grad mode is switched at module level: unknowable where it is on
        test_file = is_test_file(self.context.path)
        for scope in flow.done:
            if test_file and scope.name.startswith("test"):
                continue  # a pytest test, not an evaluation
            if scope.decorated_no_grad or scope.grad_mentions or scope.training or self._caller_no_grad(flow, scope):
                continue
            named = looks_like_eval_function(scope.name)
            reported: set[int] = set()
            for loop in scope.loops:
                if loop.parent is not None and id(loop.parent.node) in reported:
                    continue
                if any(not no_grad for _, no_grad in loop.model_calls) and (named or loop.eval_data):
                    reported.add(id(loop.node))
                    self.report(loop.node)

    @staticmethod
    def _caller_no_grad(flow: EvalFlow, scope: Scope) -> bool:
        return scope.key is not None and any(
            site.no_grad or caller.decorated_no_grad or caller.grad_mentions
            for caller, site in flow.call_sites(scope.key)
        )

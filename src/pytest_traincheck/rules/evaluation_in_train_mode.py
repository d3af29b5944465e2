"""TRN302: an evaluation loop under no_grad that never puts the model in eval mode."""

from __future__ import annotations

import re
from typing import Optional

import libcst as cst

from pytest_traincheck.analyses.dataflow import Tracker, Value
from pytest_traincheck.analyses.evalflow import (
    EvalFlow,
    EvalFlowRule,
    Loop,
    Scope,
    is_model_callee,
    looks_like_eval_function,
    looks_like_inference_function,
    source_of,
)
from pytest_traincheck.lint.context import FileContext
from pytest_traincheck.lint.project import Condition
from pytest_traincheck.lint.rule import Invalid, Valid, dotted_name


# A model whose forward depends on the mode: dropout or batch normalization somewhere in the file.
_MODE_LAYERS = re.compile(r"Dropout|BatchNorm|\bdropout\(|batch_norm\(")
_NEVER_EVAL = ("The model has dropout or BatchNorm and is never switched to eval mode, so {} predicts in training "
               "mode (random dropout, batch statistics): call `model.eval()` before it and `model.train()` after.")
_TRAINED_HERE = ("The model is trained here and never switched to eval mode, so {} runs it in training mode: with "
                 "dropout or BatchNorm the predictions are noisy and BatchNorm learns the test statistics. Call "
                 "`model.eval()` before it and `model.train()` after.")
_PASSED_IN = ("{} runs the model it is given in training mode (dropout on, BatchNorm using batch statistics), and "
              "no caller switches it to eval mode: call `model.eval()` at its start and `model.train()` before "
              "it returns.")


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

    Without `no_grad`, and with no `.eval()` (nor a call named like a mode
    switch, `model.val_start()`) in the function, it also flags:
    - a loop over evaluation data that runs a model the same function trains
      in another loop (the per-epoch test loop after the training loop);
    - a test batch forwarded inside the training loop, in an `if` block that
      draws it (`next(iter(test_loader))`) or passes it (`model(test_x)`);
    - an evaluation (or, under `no_grad`, inference) function that runs a
      model it receives as a parameter, when every call of it in the run
      passes a model with dropout or BatchNorm (under `no_grad`: any model
      but one provably without them) and none switched it to eval mode before.
    A model whose class the run defines without dropout or BatchNorm is left
    alone; one of unknown class only where the function trains it itself (or
    its caller calls `.train()` on it).

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
    anywhere in the module body silences the rule for the file. A model trained
    in the same function is assumed to be in training mode even when its class
    is unknown; one without dropout or BatchNorm is then flagged needlessly.

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
    TRIGGERS = ("no_grad", "inference_mode", "set_grad_enabled", "Dropout", "BatchNorm", "dropout", "backward",
                "eval", "test", "val", "predict", "infer")
    ANALYSES = (EvalFlow, Tracker)

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
        # A module's own prediction-head method, calling its submodules, leaves the mode to its caller.
        Valid("""
            import torch.nn as nn

            class Decoder(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.decoder_norm = nn.LayerNorm(256)
                    self.drop = nn.Dropout(0.1)

                def forward_prediction_heads(self, output):
                    return self.class_embed(self.decoder_norm(output))
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
        # Trained, then switched to eval mode for the test loop.
        Valid("""
            import torch
            from model import DeepSpeech

            model = DeepSpeech()
            for epoch in range(epochs):
                model.train()
                for x, y in train_loader:
                    criterion(model(x), y).backward()
                    optimizer.step()
                model.eval()
                for x, y in test_loader:
                    wer += score(model(x), y)
            """),
        # A model class without dropout or BatchNorm, tested inline in the training loop.
        Valid("""
            import torch.nn as nn

            class Mlp(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

                def forward(self, x):
                    return self.fc(x)

            net = Mlp()
            for step, (x, y) in enumerate(train_loader):
                criterion(net(x), y).backward()
                optimizer.step()
                if step % 50 == 0:
                    x, y = next(iter(test_loader))
                    print(accuracy(net(x), y))
            """),
        # The model wrapper's own mode switch before the validation loop.
        Valid("""
            import torch

            def train(model, train_loader, val_loader):
                for x, y in train_loader:
                    loss = model.criterion(model(x), y)
                    loss.backward()
                    model.optimizer.step()
                model.val_start()
                for x, y in val_loader:
                    score(model(x), y)
            """),
        # inference() whose only caller switches the model to eval mode first.
        Valid("""
            import torch

            def inference(loader, encoder):
                with torch.no_grad():
                    return [encoder(x) for x, _ in loader]

            def features(encoder, loader):
                encoder.eval()
                return inference(loader, encoder)

            feats = features(Encoder(), test_loader)
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
        # The per-epoch test loop after the training loop (a DeepSpeech model of unknown class).
        Invalid("""
            import torch
            from model import DeepSpeech

            model = DeepSpeech(rnn_hidden_size=400)
            for epoch in range(epochs):
                model.train()
                for inputs, targets in train_loader:
                    loss = criterion(model(inputs), targets)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                for inputs, targets in test_loader:
                    out = model(inputs)
                    total_wer += wer(decoder.decode(out), targets)
            """, line=13, column=15),
        # A test batch drawn and forwarded inside the training loop; the class (BatchNorm) is imported.
        Invalid("""
            import torch
            import torch.nn.functional as F
            from pointnet import PointNetCls

            classifier = PointNetCls(k=16)
            for epoch in range(25):
                for i, (points, target) in enumerate(dataloader):
                    optimizer.zero_grad()
                    loss = F.nll_loss(classifier(points), target)
                    loss.backward()
                    optimizer.step()
                    if i % 10 == 0:
                        j, (points, target) = next(enumerate(testdataloader, 0))
                        pred = classifier(points)
                        print(F.nll_loss(pred, target).item())
            """, line=14, column=20, files={"pointnet.py": """
            import torch.nn as nn

            class PointNetCls(nn.Module):
                def __init__(self, k):
                    super().__init__()
                    self.fc = nn.Linear(1024, k)
                    self.bn = nn.BatchNorm1d(k)

                def forward(self, x):
                    return self.bn(self.fc(x))
            """}),
        # An evaluation helper given the model: every caller passes a Dropout model and none calls eval().
        Invalid("""
            import torch

            def evaluate_model(model, iterator):
                preds = []
                for batch in iterator:
                    preds.extend(model(batch.text).argmax(1).tolist())
                return preds
            """, line=6, column=22, files={"model.py": """
            import torch.nn as nn
            from utils import evaluate_model

            class TextCNN(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.drop = nn.Dropout(0.5)
                    self.fc = nn.Linear(300, 4)

                def forward(self, x):
                    return self.fc(self.drop(x))

                def run_epoch(self, train_iter, val_iter):
                    for batch in train_iter:
                        self.loss_op(self(batch.text), batch.label).backward()
                        self.optimizer.step()
                    print(evaluate_model(self, val_iter))
                    self.train()
            """, "train.py": """
            import torch
            from model import TextCNN
            from utils import evaluate_model

            model = TextCNN()
            model.train()
            model.run_epoch(train_iter, val_iter)
            print(evaluate_model(model, test_iter))
            """}),
        # An inference helper under no_grad, reached from the script with a model nobody switches to eval.
        Invalid("""
            import torch
            from modules import SimCLR

            def inference(loader, simclr_model, device):
                features = []
                for x, y in loader:
                    with torch.no_grad():
                        h, _, z, _ = simclr_model(x.to(device), x.to(device))
                    features.extend(h.cpu().numpy())
                return features

            def get_features(simclr_model, train_loader, test_loader, device):
                return inference(train_loader, simclr_model, device), inference(test_loader, simclr_model, device)

            def test(loader, model):
                model.eval()
                return [model(x) for x, _ in loader]

            if __name__ == "__main__":
                simclr_model = SimCLR(encoder, n_features).to(device)
                train_X, test_X = get_features(simclr_model, train_loader, test_loader, device)
            """, line=8, column=26),
    ]


    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.tracker = context.shared(Tracker)
        self.values: dict[int, Optional[Value]] = {}  # what each model call's callee holds, as the tracker saw it
        self.reported: set[int] = set()

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        callee = func.value if isinstance(func, cst.Attribute) and func.attr.value == "forward" else func
        if is_model_callee(callee) and self.context.qualname(callee) is None:
            self.values[id(node)] = self.tracker.evaluate(callee)

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
                    self.reported.update(id(call) for call, _ in loop.model_calls)
                    self.report(loop.no_grad)
        for scope in flow.done:
            if flow.switches_to_eval(scope):
                continue
            self._trained_then_evaluated(flow, scope)
            self._inline_test_batch(flow, scope)
            if scope.key is not None and not scope.key[0] and not (scope.training or scope.toggles) \
                    and not self._caller_evaluates(flow, scope):
                self._given_model(scope)

    def _never_switched(self, flow: EvalFlow) -> None:
        """Flag inference functions and test-data loops of a file whose mode-dependent model never leaves training."""
        for scope in flow.done:
            own = scope.key is not None and scope.key[0] and all(
                (_callee_name(c) or "").startswith("self.") for c in scope.model_calls)
            if (looks_like_inference_function(scope.name) and scope.model_calls and not own
                    and not (scope.training or scope.toggles)):
                self._report(scope.model_calls[0], _NEVER_EVAL.format(f"`{scope.name}()`"))
                continue
            for loop in scope.loops:
                if loop.eval_data and loop.no_grad is None and not loop.training and loop.model_calls:
                    self._report(loop.model_calls[0][0], _NEVER_EVAL.format("this loop over evaluation data"))

    def _trained_then_evaluated(self, flow: EvalFlow, scope: Scope) -> None:
        """Flag a loop over evaluation data that runs a model the same function trains (no eval() in between)."""
        trained = {_callee_name(call) for loop in scope.loops if loop.training for call, _ in loop.model_calls}
        for loop in scope.loops:
            if not loop.eval_data or flow.trains(loop) or loop.no_grad is not None:
                continue
            call = next((c for c, _ in loop.model_calls if _callee_name(c) in trained), None)
            if call is not None:
                self._report_modal(call, "this loop over evaluation data")

    def _inline_test_batch(self, flow: EvalFlow, scope: Scope) -> None:
        """Flag a test batch forwarded inside the training loop (``if step % 10 == 0: model(next(test_iter))``)."""
        for block in scope.blocks:
            if block.eval_calls and not block.training and flow.trains(block.loop):
                self._report_modal(block.eval_calls[0], "this forward pass of a test batch")

    def _given_model(self, scope: Scope) -> None:
        """Flag an evaluation or inference function that runs a model its callers pass without eval mode."""
        evaluates = looks_like_eval_function(scope.name)
        infers = looks_like_inference_function(scope.name)
        if not (evaluates or infers):
            return
        calls = [(c, under) for loop in scope.loops for c, under in loop.model_calls]
        if infers:
            calls += [(c, True) for c in scope.no_grad_calls]
        for call, under in calls:
            value = self.values.get(id(call))
            if id(call) in self.reported or value is None or value.kind != "param" or (infers and not under):
                continue
            func, _, param = value.detail.partition(":")
            # Without no_grad to say "this is evaluation", only a model known to have dropout/BatchNorm counts.
            want = "maybe" if under else "modal"
            self.reported.add(id(call))
            self.report_if(Condition("param", func, f"{param}={want};!eval"), call,
                           _PASSED_IN.format(f"`{scope.name}()`"))
            return

    def _report_modal(self, call: cst.Call, what: str) -> None:
        """Report ``call`` unless its model is known not to depend on train/eval mode."""
        value = self.values.get(id(call))
        message = _TRAINED_HERE.format(what)
        if value is not None and value.kind == "instance":
            if id(call) not in self.reported:
                self.reported.add(id(call))
                self.report_if(Condition("maybe-modal", value.detail), call, message)
        elif value is not None and value.kind in ("seq", "module"):
            text = source_of(self.context, value.node) if value.node is not None else self.context.source
            if _MODE_LAYERS.search(text):
                self._report(call, message)
        else:
            self._report(call, message)

    def _report(self, node: cst.CSTNode, message: str) -> None:
        if id(node) not in self.reported:
            self.reported.add(id(node))
            self.report(node, message)

    @staticmethod
    def _caller_evaluates(flow: EvalFlow, scope: Scope) -> bool:
        return scope.key is not None and any(site.eval_before for _, site in flow.call_sites(scope.key))


def _callee_name(call: cst.Call) -> Optional[str]:
    func = call.func
    callee = func.value if isinstance(func, cst.Attribute) and func.attr.value == "forward" else func
    return dotted_name(callee)

"""TRN205: ``NLLLoss`` / ``F.nll_loss`` on outputs that are not log-probabilities."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Condition, Invalid, Valid
from pytest_traincheck.analyses.dataflow import FlowRule, Value, handed_to, loss_input, slots
from pytest_traincheck.analyses.torch_vocabulary import RAW_LAYERS

_FUNCTIONS = frozenset({"torch.nn.functional.nll_loss"})
_MODULES = frozenset({"torch.nn.NLLLoss"})
_FIX_TEXT = "apply `log_softmax(dim=1)` first, or use `CrossEntropyLoss` on the logits."


class NllLossOnLogits(FlowRule):
    """Flags `nn.NLLLoss` / `F.nll_loss` fed something that is provably not log-probabilities.

    ## What it does
    Finds negative log-likelihood losses whose prediction is the output of an
    `nn.Linear`/`nn.Conv*d` layer (directly, through a variable, or as the last
    layer of an `nn.Sequential`), of a softmax or sigmoid (probabilities, not
    their logarithm), or of a model whose `forward` returns one of those: a
    class of the same file whose `forward` returns a linear layer's output, or
    a class anywhere in the run whose `forward` returns softmax or sigmoid.

    ## Why is this bad?
    `NLLLoss` does no normalization: it returns `-input[target]`, assuming the
    input already holds log-probabilities. On logits the loss is unbounded
    below, and the model learns to inflate the target's score forever; on
    probabilities the loss lies in [-1, 0] and its gradient ignores the other
    classes. Training "works" (the loss decreases) while the model learns the
    wrong thing.

    ## Known problems
    Only provable cases are flagged: an input that passes through anything the
    rule cannot see (a helper function, a user submodule, a tuple) keeps it
    quiet. A model class defined in another file is flagged when its `forward`
    returns softmax or sigmoid; returning a linear layer's output is recognized
    only for classes of the same file.

    ## Example
    ```python
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    loss = nn.NLLLoss()(model(x), y)
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.LogSoftmax(dim=1))
    loss = nn.NLLLoss()(model(x), y)
    ```
    """

    CODE = "TRN205"
    MESSAGE = "`NLLLoss` expects log-probabilities but receives raw scores: " + _FIX_TEXT
    SEVERITY = "error"
    TRIGGERS = ("NLLLoss", "nll_loss")

    VALID = [
        # A classifier with log_softmax + NLLLoss (the reference MNIST example).
        Valid("""
            import torch.nn as nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(784, 10)

                def forward(self, x):
                    x = self.fc(x)
                    return F.log_softmax(x, dim=1)

            model = Net()
            loss = F.nll_loss(model(x), y)
            """),
        Valid("""
            import torch.nn as nn
            model = nn.Sequential(nn.Linear(784, 10), nn.LogSoftmax(dim=1))
            loss = nn.NLLLoss()(model(x), y)
            """),
        # Unknown model: quiet.
        Valid("""
            import torch.nn.functional as F
            from models import build
            model = build()
            loss = F.nll_loss(model(x), y)
            """),
        # Log of probabilities is a log-probability.
        Valid("""
            import torch
            import torch.nn.functional as F
            probs = torch.softmax(logits, dim=1)
            loss = F.nll_loss(torch.log(probs + 1e-8), y)
            """),
        # The log_softmax is applied through a user submodule the rule cannot see.
        Valid("""
            import torch.nn as nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self, head):
                    super().__init__()
                    self.head = head

                def forward(self, x):
                    return self.head(x)

            loss = F.nll_loss(Net(Head())(x), y)
            """),
        # The loss handed to a model whose forward returns log_softmax.
        Valid("""
            import torch.nn as nn

            class TextRNN(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(64, 4)
                    self.log_softmax = nn.LogSoftmax(dim=1)

                def forward(self, x):
                    return self.log_softmax(self.fc(x))

                def add_loss_op(self, loss_op):
                    self.loss_op = loss_op

                def run_epoch(self, batches):
                    for x, y in batches:
                        loss = self.loss_op(self.__call__(x), y)
                        loss.backward()

            model = TextRNN()
            model.add_loss_op(nn.NLLLoss())
            """),
        # A softmax model that stores the loss but applies it to something else than its own output.
        Valid("""
            import torch.nn as nn

            class Scorer(nn.Module):
                def __init__(self, criterion):
                    super().__init__()
                    self.fc = nn.Linear(64, 4)
                    self.softmax = nn.Softmax(dim=1)
                    self.criterion = criterion

                def forward(self, x):
                    return self.softmax(self.fc(x))

                def auxiliary_loss(self, log_probs, y):
                    return self.criterion(log_probs, y)

            scorer = Scorer(nn.NLLLoss())
            """),
    ]
    INVALID = [
        Invalid("""
            import torch.nn as nn
            model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
            criterion = nn.NLLLoss()
            loss = criterion(model(x), y)
            """, line=4, column=8),
        Invalid("""
            import torch.nn.functional as F
            probs = F.softmax(logits, dim=1)
            loss = F.nll_loss(probs, y)
            """, line=3),
        Invalid("""
            import torch.nn as nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc1 = nn.Linear(784, 128)
                    self.fc2 = nn.Linear(128, 10)

                def forward(self, x):
                    x = F.relu(self.fc1(x))
                    x = self.fc2(x)
                    return x

            model = Net()
            loss = F.nll_loss(model(data), target)
            """, line=16),
        Invalid(
            """
            import torch.nn as nn
            from net import Net
            model = Net()
            loss = nn.NLLLoss()(model(x), y)
            """,
            line=4,
            files={"net.py": """
                import torch.nn as nn

                class Net(nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.fc = nn.Linear(784, 10)
                        self.out = nn.Softmax(dim=1)

                    def forward(self, x):
                        return self.out(self.fc(x))
                """},
        ),
        # The loss is handed to a model class (star-imported) that trains itself on its softmax output.
        Invalid(
            """
            import torch
            from torch import nn
            from model import *

            model = TextRNN(config)
            optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
            NLLLoss = nn.NLLLoss()
            model.add_optimizer(optimizer)
            model.add_loss_op(NLLLoss)
            for epoch in range(config.max_epochs):
                model.run_epoch(train_iterator, epoch)
            """,
            line=9,
            files={"model.py": """
                from torch import nn

                class TextRNN(nn.Module):
                    def __init__(self, config):
                        super().__init__()
                        self.lstm = nn.LSTM(config.embed_size, config.hidden_size)
                        self.fc = nn.Linear(config.hidden_size, config.output_size)
                        self.softmax = nn.Softmax()

                    def forward(self, x):
                        out, (h_n, c_n) = self.lstm(x)
                        return self.softmax(self.fc(h_n[-1]))

                    def add_optimizer(self, optimizer):
                        self.optimizer = optimizer

                    def add_loss_op(self, loss_op):
                        self.loss_op = loss_op

                    def run_epoch(self, train_iterator, epoch):
                        for i, batch in enumerate(train_iterator):
                            self.optimizer.zero_grad()
                            y_pred = self.__call__(batch.text)
                            loss = self.loss_op(y_pred, batch.label)
                            loss.backward()
                            self.optimizer.step()
                """},
        ),
        # Through the constructor, by keyword.
        Invalid("""
            import torch.nn as nn
            import torch.nn.functional as F

            class Tagger(nn.Module):
                def __init__(self, criterion=None):
                    super().__init__()
                    self.fc = nn.Linear(64, 9)
                    self.criterion = criterion

                def forward(self, x):
                    return F.softmax(self.fc(x), dim=-1)

                def training_loss(self, x, y):
                    return self.criterion(self.forward(x), y)

            tagger = Tagger(criterion=nn.NLLLoss())
            """, line=16),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        self._check_handed_loss(node)
        arg = loss_input(self.flow, node, _FUNCTIONS, _MODULES)
        value = self.flow.evaluate(arg.value) if arg is not None else None
        if value is None:
            return
        if value.kind == "act" and value.detail in ("softmax", "sigmoid"):
            self.report(node, f"`NLLLoss` expects log-probabilities but receives {value.detail} probabilities: "
                        + _FIX_TEXT)
        elif value.kind == "out" and value.detail in RAW_LAYERS:
            self.report(node, f"`NLLLoss` expects log-probabilities but receives the raw output of "
                        f"`{value.detail.replace('torch.', '')}`: " + _FIX_TEXT)
        elif value.kind == "model_out":
            self._check_model(node, value)

    def _check_handed_loss(self, node: cst.Call) -> None:
        """``model.add_loss_op(nn.NLLLoss())``: a model class that applies what it is handed to its own output."""
        receiving = handed_to(self.flow, node)
        if receiving is None:
            return
        name, method = receiving
        for slot, value in slots(self.flow, node):
            if value is None or value.kind != "module" or value.detail not in _MODULES:
                continue
            for activation in ("softmax", "sigmoid"):
                message = (f"`{name.rsplit('.', 1)[-1]}` applies this `NLLLoss` to what its `forward` returns, "
                           f"{activation} probabilities, but `NLLLoss` expects log-probabilities: return "
                           "`log_softmax(dim=1)` from `forward`, or use `CrossEntropyLoss` on logits.")
                self.report_if(Condition("loss-param", name, f"{method}:{slot}:{activation}"), node, message)

    def _check_model(self, node: cst.Call, value: Value) -> None:
        name = value.detail
        for activation in ("softmax", "sigmoid"):
            message = (f"`{name.rsplit('.', 1)[-1]}.forward` returns {activation} probabilities, but `NLLLoss` expects "
                       "log-probabilities: return `log_softmax(dim=1)` from `forward`, "
                       "or use `CrossEntropyLoss` on logits.")
            self.report_if(Condition("returns", name, activation), node, message)
        info = self.flow.file_classes.get(name)
        returns = info.returns if info is not None and info.is_module else []
        if returns and all(r is not None and r.kind == "out" and r.detail in RAW_LAYERS for r in returns):
            self.report(node, f"`{name}.forward` returns raw scores, but `NLLLoss` expects log-probabilities: "
                        + _FIX_TEXT)

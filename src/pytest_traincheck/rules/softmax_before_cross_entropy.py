"""TRN201: probabilities (a softmax output) fed to cross entropy, which expects logits."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Condition, Invalid, Valid
from pytest_traincheck.analyses.dataflow import FlowRule, direct_activation_input, loss_input, replace_loss_input
from pytest_traincheck.analyses.torch_vocabulary import CROSS_ENTROPY

_FUNCTIONS = frozenset({"torch.nn.functional.cross_entropy"})
_MODULES = frozenset(CROSS_ENTROPY - _FUNCTIONS)


class SoftmaxBeforeCrossEntropy(FlowRule):
    """Flags a softmax output passed to `nn.CrossEntropyLoss` / `F.cross_entropy`.

    ## What it does
    Finds cross-entropy losses whose prediction argument is the output of a
    softmax: applied inline (`criterion(F.softmax(out, 1), y)`, `out.softmax(1)`),
    through a local variable or attribute, through an `nn.Sequential` whose
    last layer is `nn.Softmax`, or through a model whose `forward` returns a
    softmax, even when the model class is defined in another file of the run
    (`out = model(x)` with `model = Net()`; also `self.model` or `self(x)` in a
    LightningModule). The loss may be a variable or attribute holding
    `nn.CrossEntropyLoss()`, the inline `nn.CrossEntropyLoss()(out, y)`, or
    `F.cross_entropy`.

    ## Why is this bad?
    Cross entropy applies `log_softmax` to its input itself. Given
    probabilities, it computes `log_softmax(softmax(z))`: the inputs are squashed
    into [0, 1], the loss can no longer approach zero, and the gradients shrink
    as the model grows confident, so training stalls well short of where it
    would get with logits. The seed lists it as "do NOT use softmax() at the
    output layer when using CrossEntropy()".

    ## Known problems
    A softmax used only for reporting (accuracy, argmax, metrics) while the
    loss gets the logits is not flagged, and neither is `log_softmax` before
    cross entropy: `log_softmax` is idempotent, so `cross_entropy(log_softmax(z))`
    equals `cross_entropy(z)` exactly (values and gradients), a redundant but
    harmless operation. Losses and models passed in as function parameters,
    values chosen in an `if` branch, and tuples returned by `forward` are not
    followed; those cases go unreported.

    ## Example
    ```python
    criterion = nn.CrossEntropyLoss()
    probs = F.softmax(model(x), dim=1)
    loss = criterion(probs, y)
    ```

    ## Use instead
    ```python
    criterion = nn.CrossEntropyLoss()
    logits = model(x)
    loss = criterion(logits, y)
    probs = F.softmax(logits, dim=1)  # only for reporting
    ```

    ## Fix safety
    Unsafe: when the softmax is applied inline in the loss call, the fix passes
    its input instead. That changes the loss value (to the intended one), and
    any code that relied on the probabilities there must be revisited.
    """

    CODE = "TRN201"
    MESSAGE = ("Cross entropy receives softmax probabilities but applies `log_softmax` itself: "
               "pass the raw logits and keep softmax for reporting only.")
    FIX_TITLE = "Pass the softmax's input (the logits) to the loss"
    FIX_SAFE = False
    TRIGGERS = ("cross_entropy", "CrossEntropyLoss")

    VALID = [
        Valid("""
            import torch.nn as nn
            criterion = nn.CrossEntropyLoss()
            logits = model(x)
            loss = criterion(logits, y)
            probs = logits.softmax(dim=1)
            acc = (probs.argmax(1) == y).float().mean()
            """),
        # log_softmax + NLLLoss is the correct pairing.
        Valid("""
            import torch.nn as nn
            import torch.nn.functional as F
            criterion = nn.NLLLoss()
            loss = criterion(F.log_softmax(logits, dim=1), y)
            """),
        # log_softmax before cross entropy is redundant but exact (log_softmax is idempotent).
        Valid("""
            import torch.nn.functional as F
            loss = F.cross_entropy(F.log_softmax(logits, dim=1), y)
            """),
        # The softmax model is used only for inference; training uses the logits model.
        Valid("""
            import torch.nn as nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(10, 2)

                def forward(self, x):
                    return self.fc(x)

            model = Net()
            out = model(x)
            loss = F.cross_entropy(out, y)
            probs = F.softmax(out, dim=1)
            """),
        # Rebound in one branch only: not provably a softmax.
        Valid("""
            import torch.nn as nn
            import torch.nn.functional as F
            criterion = nn.CrossEntropyLoss()
            out = model(x)
            if return_probs:
                out = F.softmax(out, dim=1)
            loss = criterion(out, y)
            """),
        # A local function parameter shadows the module-level softmax output.
        Valid("""
            import torch
            import torch.nn as nn
            out = torch.softmax(z, dim=1)
            def step(out, y):
                return nn.CrossEntropyLoss()(out, y)
            """),
        # A user function named like the loss is not the loss.
        Valid("""
            import torch.nn.functional as F
            def cross_entropy(p, y):
                return -(p.log() * y).sum()
            loss = cross_entropy(F.softmax(z, dim=1), y)
            """),
    ]
    INVALID = [
        # A Sequential of named layers (an OrderedDict) ending in Softmax.
        Invalid("""
            from collections import OrderedDict
            import torch.nn as nn
            model = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 3)), ("softmax", nn.Softmax(dim=1))]))
            criterion = nn.CrossEntropyLoss()
            loss = criterion(model(x), y)
            """, line=5, column=8),
        Invalid(
            """
            import torch.nn as nn
            import torch.nn.functional as F
            criterion = nn.CrossEntropyLoss()
            loss = criterion(F.softmax(out, dim=1), y)
            """,
            line=4, column=8,
            expected_fix="""
            import torch.nn as nn
            import torch.nn.functional as F
            criterion = nn.CrossEntropyLoss()
            loss = criterion(out, y)
            """,
        ),
        Invalid(
            """
            import torch.nn.functional as F
            loss = F.cross_entropy(out.softmax(1), target)
            """,
            line=2,
            expected_fix="""
            import torch.nn.functional as F
            loss = F.cross_entropy(out, target)
            """,
        ),
        Invalid("""
            import torch.nn as nn
            import torch.nn.functional as F
            criterion = nn.CrossEntropyLoss()
            logits = model(images)
            probs = F.softmax(logits, dim=1)
            loss = criterion(probs, labels)
            """, line=6),
        Invalid("""
            import torch.nn as nn
            model = nn.Sequential(nn.Linear(784, 10), nn.Softmax(dim=1))
            loss = nn.CrossEntropyLoss()(model(x), y)
            """, line=3),
        # The model class in another file returns softmax from forward.
        Invalid(
            """
            import torch.nn as nn
            from model import Net
            model = Net().to(device)
            criterion = nn.CrossEntropyLoss()
            for x, y in loader:
                out = model(x)
                loss = criterion(out, y)
            """,
            line=7,
            files={"model.py": """
                import torch.nn as nn
                import torch.nn.functional as F

                class Net(nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.fc = nn.Linear(784, 10)

                    def forward(self, x):
                        return F.softmax(self.fc(x), dim=1)
                """},
        ),
        # A LightningModule whose wrapped model returns softmax.
        Invalid("""
            import torch.nn as nn
            import torch.nn.functional as F
            import pytorch_lightning as pl

            class Classifier(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.net = nn.Sequential(nn.Linear(784, 10), nn.Softmax(dim=1))

                def forward(self, x):
                    return self.net(x)

            class Lit(pl.LightningModule):
                def __init__(self):
                    super().__init__()
                    self.model = Classifier()
                    self.loss_fn = nn.CrossEntropyLoss()

                def training_step(self, batch, batch_idx):
                    x, y = batch
                    return self.loss_fn(self.model(x), y)
            """, line=21),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        arg = loss_input(self.flow, node, _FUNCTIONS, _MODULES)
        value = self.flow.evaluate(arg.value) if arg is not None else None
        if arg is None or value is None:
            return
        if value.kind == "act" and value.detail == "softmax":
            inline = direct_activation_input(self.flow, arg.value) is not None
            self.report(node, fix=(lambda n: replace_loss_input(n, self.flow)) if inline else None)
        elif value.kind == "model_out":
            message = (f"`{value.detail.rsplit('.', 1)[-1]}.forward` returns softmax probabilities, and cross entropy applies "
                       "`log_softmax` itself: return the logits from `forward` and apply softmax only for reporting.")
            self.report_if(Condition("returns", value.detail, "softmax"), node, message)

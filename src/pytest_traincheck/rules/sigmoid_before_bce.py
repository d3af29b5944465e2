"""TRN204: a sigmoid output fed to ``BCELoss`` instead of logits to ``BCEWithLogitsLoss``."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Condition, Invalid, Valid
from pytest_traincheck.analyses.dataflow import FlowRule, loss_input

_FUNCTIONS = frozenset({"torch.nn.functional.binary_cross_entropy"})
_MODULES = frozenset({"torch.nn.BCELoss"})


class SigmoidBeforeBCE(FlowRule):
    """Flags `nn.BCELoss` / `F.binary_cross_entropy` applied to a sigmoid output.

    ## What it does
    Finds binary cross-entropy losses whose prediction is the output of a
    sigmoid: `torch.sigmoid`, `F.sigmoid`, `x.sigmoid()`, `nn.Sigmoid`, an
    `nn.Sequential` ending in `nn.Sigmoid`, or a model whose `forward` returns
    a sigmoid (also across files), followed the same way as TRN201.

    ## Why is this bad?
    `BCELoss(sigmoid(z))` computes `log(sigmoid(z))` in two steps. In float32,
    `sigmoid(z)` rounds to exactly 1.0 once `z` passes about 17, so a
    confidently wrong prediction gets a loss clamped at 100 and a gradient of
    exactly zero: the example stops teaching the model. `BCEWithLogitsLoss`
    fuses both with the log-sum-exp trick and keeps the gradient
    `sigmoid(z) - y` (try `z = 20`, `y = 0`: a gradient of 0 instead of 0.5 per
    element). Under CUDA `torch.autocast`, `binary_cross_entropy` refuses to
    run at all. The
    PyTorch documentation recommends `BCEWithLogitsLoss` for this reason.

    The rule is on by default with severity "warning": the pattern it matches
    is exactly the documented one (no guessing), the replacement is always
    equivalent in exact arithmetic, and the failure it prevents (examples that
    stop learning once the model saturates, typical of GAN discriminators and
    long trainings) is silent. Code that deliberately keeps probabilities can
    ignore it per line with `# noqa: TRN204`.

    ## Known problems
    Sigmoids applied through helper functions or chosen in an `if` branch are
    not followed. No fix is offered: the change spans the activation and the
    loss construction, which may live in different files.

    ## Example
    ```python
    criterion = nn.BCELoss()
    loss = criterion(torch.sigmoid(logits), targets)
    ```

    ## Use instead
    ```python
    criterion = nn.BCEWithLogitsLoss()
    loss = criterion(logits, targets)
    ```
    """

    CODE = "TRN204"
    MESSAGE = ("`BCELoss` on a sigmoid output loses the gradient once the sigmoid saturates: drop the sigmoid "
               "and use `nn.BCEWithLogitsLoss` (or `F.binary_cross_entropy_with_logits`) on the logits.")
    SEVERITY = "warning"
    TRIGGERS = ("BCELoss", "binary_cross_entropy")

    VALID = [
        Valid("""
            import torch.nn as nn
            criterion = nn.BCEWithLogitsLoss()
            loss = criterion(logits, y)
            probs = logits.sigmoid()
            """),
        # BCELoss on probabilities that do not come from a sigmoid (e.g. a mixture).
        Valid("""
            import torch.nn.functional as F
            p = 0.5 * (p1 + p2)
            loss = F.binary_cross_entropy(p, y)
            """),
        Valid("""
            import torch
            import torch.nn as nn
            criterion = nn.BCELoss()
            out = torch.sigmoid(z)
            out = model(x)
            loss = criterion(out, y)
            """),
        Valid("""
            import torch
            import torch.nn.functional as F
            loss = F.binary_cross_entropy_with_logits(logits, y)
            """),
    ]
    INVALID = [
        Invalid("""
            import torch
            import torch.nn as nn
            criterion = nn.BCELoss()
            loss = criterion(torch.sigmoid(logits), targets)
            """, line=4, column=8),
        Invalid("""
            import torch.nn as nn
            netD = nn.Sequential(nn.Linear(784, 1), nn.Sigmoid())
            criterion = nn.BCELoss()
            output = netD(real).view(-1)
            errD_real = criterion(output, label)
            """, line=5),
        Invalid("""
            import torch.nn.functional as F
            p = logits.sigmoid()
            loss = F.binary_cross_entropy(p, y)
            """, line=3),
        Invalid(
            """
            import torch.nn as nn
            from models import Discriminator
            D = Discriminator()
            bce = nn.BCELoss()
            loss = bce(D(images), ones)
            """,
            line=5,
            files={"models.py": """
                import torch
                import torch.nn as nn

                class Discriminator(nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.fc = nn.Linear(784, 1)

                    def forward(self, x):
                        return torch.sigmoid(self.fc(x))
                """},
        ),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        arg = loss_input(self.flow, node, _FUNCTIONS, _MODULES)
        value = self.flow.evaluate(arg.value) if arg is not None else None
        if value is None:
            return
        if value.kind == "act" and value.detail == "sigmoid":
            self.report(node)
        elif value.kind == "model_out":
            message = (f"`{value.detail.rsplit('.', 1)[-1]}.forward` returns a sigmoid and `BCELoss` loses the gradient once it "
                       "saturates: return the logits and use `nn.BCEWithLogitsLoss`.")
            self.report_if(Condition("returns", value.detail, "sigmoid"), node, message)

"""TRN201: probabilities (a softmax output) fed to cross entropy, which expects logits."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.lint.rule import Condition, Invalid, Valid
from pytest_traincheck.analyses.dataflow import (
    FlowRule,
    direct_activation_input,
    loss_input,
    param_loss_input,
    replace_loss_input,
)
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
    harmless operation. A model (or loss) passed in as a parameter of a
    module-level function (`def train(model, criterion, ...)`) is followed only
    when every call of that function found in the run, in its own file or
    imported by module path, passes a softmax model (and cross entropy); one
    caller passing logits or something unknown, a `*args` call, or a function
    only passed around as a callback leaves it unreported. The same holds for a
    loss helper's prediction parameter (`def my_loss(classifier, ...)`, also
    called through `loss_fn = my_loss`): every caller must pass softmax
    probabilities, such as the element of the tuple a model's `forward`
    returns (`probs, boxes = net(x)`). Values chosen in an `if` branch and
    tuple elements taken by index (`net(x)[0]`) are not followed.

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
    # "torch": the model and the loss may both arrive as parameters, named nowhere in the file
    TRIGGERS = ("torch", "cross_entropy", "CrossEntropyLoss")

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
        # The training function's model parameter: one caller passes logits.
        Valid("""
            import torch.nn as nn
            def train(model, x, y):
                return nn.CrossEntropyLoss()(model(x), y)
            train(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), x, y)
            train(nn.Sequential(nn.Linear(4, 3)), x, y)
            """),
        # A layer added after the softmax: the head ends in logits again.
        Valid("""
            import torch

            class Head(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = torch.nn.Sequential(torch.nn.Softmax(dim=1))
                    self.fc.add_module("out", torch.nn.Linear(10, 10))

                def forward(self, x):
                    return self.fc.forward(x)

            def train(model, x, y):
                return torch.nn.CrossEntropyLoss()(model(x), y)

            train(Head(), x, y)
            """),
        # ... or something the linter cannot see (a model from a factory, a `*args` call).
        Valid("""
            import torch.nn as nn
            def train(model, x, y):
                return nn.CrossEntropyLoss()(model(x), y)
            train(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), x, y)
            train(make_model(), x, y)
            train(*args)
            """),
        # The loss is a parameter, and a caller passes NLLLoss (which wants the log-softmax).
        Valid("""
            import torch.nn as nn
            def step(model, loss_fn, x, y):
                return loss_fn(model(x), y)
            model = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))
            step(model, nn.NLLLoss(), x, y)
            """),
        # A function nobody calls by name: what it is given is unknown.
        Valid("""
            import torch.nn as nn
            def train(model, x, y):
                return nn.CrossEntropyLoss()(model(x), y)
            """),
        # A user function named like the loss is not the loss.
        Valid("""
            import torch.nn.functional as F
            def cross_entropy(p, y):
                return -(p.log() * y).sum()
            loss = cross_entropy(F.softmax(z, dim=1), y)
            """),
        # forward returns (logits, probabilities): the loss gets the logits, here and through a loss helper.
        Valid("""
            import torch.nn as nn

            class Detector(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.head = nn.Linear(32, 5)
                    self.softmax = nn.Softmax(dim=1)

                def forward(self, x):
                    logits = self.head(x)
                    return logits, self.softmax(logits)

            def my_loss(classifier, mode):
                cross_entropy = nn.CrossEntropyLoss()
                return cross_entropy(classifier, mode)

            net = Detector()
            criterion = nn.CrossEntropyLoss()
            loss_fn = my_loss
            for images, mode in loader:
                logits, probs = net(images)
                loss = criterion(logits, mode) + loss_fn(logits, mode)
            """),
        # A loss helper whose callers do not all pass probabilities.
        Valid("""
            import torch.nn as nn
            import torch.nn.functional as F

            def my_loss(classifier, mode):
                return nn.CrossEntropyLoss()(classifier, mode)

            train_loss = my_loss(F.softmax(scores, dim=1), labels)
            val_loss = my_loss(scores, labels)
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
        # The model and the loss reach the training function as parameters; a builder fills a
        # Sequential with add_module, and both are called through .forward.
        Invalid("""
            import torch

            def build_model(n_in, n_out):
                model = torch.nn.Sequential()
                model.add_module("linear", torch.nn.Linear(n_in, n_out))
                model.add_module("softmax", torch.nn.Softmax(dim=1))
                return model

            def train(model, loss, optimizer, x, y):
                optimizer.zero_grad()
                output = loss.forward(model.forward(x), y)
                output.backward()
                optimizer.step()

            def main():
                model = build_model(784, 10)
                loss = torch.nn.CrossEntropyLoss()
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
                for x, y in loader:
                    train(model, loss, optimizer, x, y)
            """, line=11, column=14),
        # The classifier head is filled with add_module in __init__; forward calls it through .forward.
        Invalid("""
            import torch

            class ConvNet(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = torch.nn.Sequential()
                    self.fc.add_module("fc", torch.nn.Linear(320, 10))
                    self.fc.add_module("softmax", torch.nn.Softmax(dim=1))

                def forward(self, x):
                    return self.fc.forward(x.view(-1, 320))

            def train(model, loss, x, y):
                return loss.forward(model.forward(x), y)

            train(ConvNet(), torch.nn.CrossEntropyLoss(), x, y)
            """, line=14),
        # Cross-file: main.py builds the softmax classifier (defined in model.py) and passes it
        # to this file's training function, which owns the loss.
        Invalid(
            """
            import torch.nn as nn

            def source_only(encoder, classifier, loader):
                criterion = nn.CrossEntropyLoss()
                for x, y in loader:
                    pred = classifier(encoder(x))
                    loss = criterion(pred, y)
            """,
            line=7,
            files={
                "main.py": """
                    import torch
                    import model
                    import snippet as train

                    def main():
                        encoder = model.Encoder().cuda()
                        classifier = model.Classifier().cuda()
                        train.source_only(encoder, classifier, loader=loader)
                    """,
                "model.py": """
                    import torch.nn as nn
                    import torch.nn.functional as F

                    class Encoder(nn.Module):
                        def forward(self, x):
                            return self.conv(x)

                    class Classifier(nn.Module):
                        def __init__(self):
                            super().__init__()
                            self.fc = nn.Linear(128, 10)

                        def forward(self, x):
                            return F.softmax(self.fc(x), dim=1)
                    """,
            },
        ),
        # forward returns a tuple whose first element is softmax probabilities; a loss helper in this file
        # receives it through an alias (loss_fn = my_loss), from a training script elsewhere.
        Invalid(
            """
            import torch.nn as nn

            def my_loss(classifier, regression, points, mode):
                mse = nn.MSELoss()(regression, points)
                cross_entropy = nn.CrossEntropyLoss()
                ce = cross_entropy(classifier, mode)
                return ce * 0.5 + mse * 0.5, mse, ce
            """,
            line=6,
            files={
                "training.py": """
                    import torch
                    from LYTNet import LYTNet
                    from snippet import my_loss

                    net = LYTNet()
                    loss_fn = my_loss
                    optimizer = torch.optim.Adam(net.parameters())
                    for data in loader:
                        pred_classes, pred_direc = net(data["image"])
                        loss, mse, ce = loss_fn(pred_classes, pred_direc, data["points"], data["mode"])
                        loss.backward()
                    """,
                "LYTNet.py": """
                    import torch.nn as nn

                    class LYTNet(nn.Module):
                        def __init__(self):
                            super().__init__()
                            self.features = nn.Conv2d(3, 32, 3)
                            self.classifier_light = nn.Sequential(nn.Linear(32, 5), nn.Softmax())
                            self.regression_direction = nn.Linear(32, 4)

                        def forward(self, x):
                            x = self.features(x).mean(3).mean(2)
                            x1 = self.classifier_light(x)
                            x2 = self.regression_direction(x)
                            return x1, x2
                    """,
            },
        ),
        # The same tuple unpacked right before the loss.
        Invalid("""
            import torch.nn as nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(16, 3)
                    self.box = nn.Linear(16, 4)

                def forward(self, x):
                    return F.softmax(self.fc(x), dim=1), self.box(x)

            net = Net()
            criterion = nn.CrossEntropyLoss()
            probs, boxes = net(x)
            loss = criterion(probs, y)
            """, line=16),
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
        if arg is None:
            self._check_loss_param(node)
            return
        value = self.flow.evaluate(arg.value)
        if value is None:
            return
        if value.kind == "act" and value.detail == "softmax":
            inline = direct_activation_input(self.flow, arg.value) is not None
            self.report(node, fix=(lambda n: replace_loss_input(n, self.flow)) if inline else None)
        elif value.kind == "model_out":
            message = (f"`{value.detail.rsplit('.', 1)[-1]}.forward` returns softmax probabilities, and cross entropy applies "
                       "`log_softmax` itself: return the logits from `forward` and apply softmax only for reporting.")
            self.report_if(Condition("returns", value.detail, "softmax"), node, message)
        elif value.kind == "param_out":
            func, _, param = value.detail.partition(":")
            self.report_if(Condition("param", func, f"{param}=returns:softmax"), node, _param_message(value.detail))
        elif value.kind == "model_item":
            name, _, index = value.detail.rpartition("#")
            self.report_if(Condition("item", name, f"{index}:softmax"), node, _item_message(name, index))
        elif value.kind == "param":  # def my_loss(classifier, ...): every caller passes softmax probabilities
            func, _, param = value.detail.partition(":")
            self.report_if(Condition("param", func, f"{param}=out:softmax"), node,
                           f"Every call of `{func}` passes as `{param.partition(':')[2]}` softmax probabilities, and "
                           "cross entropy applies `log_softmax` itself: pass the logits and apply softmax only for "
                           "reporting.")

    def _check_loss_param(self, node: cst.Call) -> None:
        """The loss is a parameter too (``def train(model, loss, ...)``): every caller must pass cross entropy."""
        found = param_loss_input(self.flow, node)
        if found is None:
            return
        loss, arg = found
        value = self.flow.evaluate(arg.value)
        func, _, loss_param = loss.partition(":")
        wants_loss = f"{loss_param}=module:{'|'.join(sorted(_MODULES))}"
        if value is not None and value.kind == "act" and value.detail == "softmax":
            self.report_if(Condition("param", func, wants_loss), node)
        elif value is not None and value.kind == "param_out" and value.detail.partition(":")[0] == func:
            model_param = value.detail.partition(":")[2]
            self.report_if(Condition("param", func, f"{model_param}=returns:softmax;{wants_loss}"), node,
                           _param_message(value.detail))


def _item_message(name: str, index: str) -> str:
    """The message for element ``index`` of the tuple a model's forward returns."""
    short = name.rsplit(".", 1)[-1]
    return (f"`{short}.forward` returns softmax probabilities as element {index} of its tuple, and cross entropy "
            "applies `log_softmax` itself: return the logits from `forward` and apply softmax only for reporting.")


def _param_message(param: str) -> str:
    """The message for a model that reaches the loss as the parameter ``<func>:<index>:<name>``."""
    func, _, rest = param.partition(":")
    name = rest.partition(":")[2]
    return (f"Every call of `{func}` passes as `{name}` a model whose `forward` returns softmax probabilities, and "
            "cross entropy applies `log_softmax` itself: return the logits from `forward` and apply softmax only "
            "for reporting.")

"""TRN105: a recurrent model trained without gradient clipping."""

from __future__ import annotations

from typing import Optional, Union

import libcst as cst

from pytest_traincheck.lint.rule import Condition, Invalid, Valid, dotted_name, get_arg
from pytest_traincheck.analyses.facts import contains_recurrent
from pytest_traincheck.analyses.loops import Event, LoopRule, Scope, optimizer_bindings
from pytest_traincheck.analyses.torch_vocabulary import RECURRENT_LAYERS, strip_wrappers

_Verdict = Union[bool, str]  # True: holds a recurrent layer; a class name: depends on that class; False: unknown


class MissingGradClipping(LoopRule):
    """Flags training loops of RNN/LSTM/GRU models that never clip the gradients.

    ## What it does
    Finds training loops (a loop calling `backward()` and an optimizer's
    `step()`) whose model holds an `nn.RNN`, `nn.LSTM` or `nn.GRU` and that
    call no clipping anywhere in the loop or in the helpers it calls: no
    `clip_grad_norm_`, `clip_grad_value_`, `accelerator.clip_grad_norm_`,
    `fabric.clip_gradients`, `p.grad.clamp_()` or other call named like a
    clip. The model is found from the optimizer's construction
    (`optim.Adam(model.parameters())`) or from the calls in the loop
    (`model(x)`), then from its binding: `model = nn.LSTM(...)`, or
    `model = Seq2Seq(...)` where `Seq2Seq` (defined in any file of the run,
    found through the imports, `from model import *` included) holds a
    recurrent layer. An optimizer over several models
    (`params = list(encoder.parameters()) + list(decoder.parameters())`)
    counts when any of them is recurrent; a loop in a method of the model
    class itself (`self(x)`, `self.__call__(x)`, `Adam(self.parameters())`)
    trains that class. A model passed as a parameter
    (`def train(model, ...)`) is followed to the calls of that function in the
    same file.

    ## Why is this bad?
    Back-propagation through time multiplies by the recurrent weight matrix
    once per time step, so a single long or unlucky sequence can produce a
    gradient orders of magnitude larger than usual: one step then throws the
    weights far away (the loss jumps to NaN or never recovers). Clipping the
    gradient norm bounds each update and is standard practice for recurrent
    models.

    ## Known problems
    Models built by factories or configuration (`build_model(cfg)`) are not
    recognised; `nn.LSTMCell`/`nn.GRUCell` used by hand are not counted as
    recurrent. Clipping through gradient hooks (`register_hook`) anywhere in
    the file silences the rule. Severity is "warning": clipping is a strong
    recommendation, not a correctness requirement.

    ## Example
    ```python
    model = nn.LSTM(10, 20)
    optimizer = optim.Adam(model.parameters())
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x)[0], y)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x)[0], y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
    ```

    ## References
    - Pascanu, Mikolov, Bengio (2013),
      [On the difficulty of training recurrent neural networks](https://arxiv.org/abs/1211.5063)
    """

    CODE = "TRN105"
    MESSAGE = ("This loop trains a recurrent model without clipping its gradients: call "
               "`torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)` between `backward()` and "
               "`step()`.")
    SEVERITY = "warning"
    TRIGGERS = ("backward",)

    VALID = [
        # Nested user modules without any recurrent layer.
        Valid("""
            import torch
            import torch.nn as nn
            class Block(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(4, 4)
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.block = Block()
            model = Net()
            opt = torch.optim.Adam(model.parameters())
            for x, y in loader:
                opt.zero_grad()
                criterion(model(x), y).backward()
                opt.step()
            """),
        Valid("""
            import torch
            import torch.nn as nn
            model = nn.LSTM(10, 20)
            optimizer = torch.optim.Adam(model.parameters())
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x)[0], y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                optimizer.step()
            """),
        # Not recurrent.
        Valid("""
            import torch
            import torch.nn as nn
            model = nn.Linear(10, 2)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            """),
        # Clipping in a helper of the same file, and AMP clipping after unscale_.
        Valid("""
            import torch.nn as nn
            from torch import optim
            model = nn.GRU(8, 8)
            opt = optim.Adam(model.parameters())

            def clip(m):
                nn.utils.clip_grad_value_(m.parameters(), 0.5)

            for x in loader:
                opt.zero_grad()
                scaler.scale(model(x)[0].sum()).backward()
                scaler.unscale_(opt)
                clip(model)
                scaler.step(opt)
                scaler.update()
            """),
        # A model parameter that no call site of the file binds.
        Valid("""
            def train(model, loader, optimizer):
                for x, y in loader:
                    optimizer.zero_grad()
                    model(x).sum().backward()
                    optimizer.step()
            """),
        # One optimizer over an encoder and a decoder, neither of them recurrent.
        Valid("""
            import torch
            import torch.nn as nn
            class EncoderCNN(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(3, 16, 3)
            class DecoderMLP(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(16, 10)
            encoder = EncoderCNN().cuda()
            decoder = DecoderMLP().cuda()
            params = list(encoder.parameters()) + list(decoder.parameters())
            optimizer = torch.optim.Adam(params, lr=1e-3)
            for images, labels in loader:
                loss = criterion(decoder(encoder(images)), labels)
                decoder.zero_grad()
                encoder.zero_grad()
                loss.backward()
                optimizer.step()
            """),
        # A convolutional model that trains itself in one of its methods.
        Valid("""
            import torch.nn as nn
            class TextCNN(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv1d(300, 100, 3)
                    self.fc = nn.Linear(100, 4)

                def add_optimizer(self, optimizer):
                    self.optimizer = optimizer

                def run_epoch(self, batches):
                    for x, y in batches:
                        self.optimizer.zero_grad()
                        loss = self.loss_op(self.__call__(x), y)
                        loss.backward()
                        self.optimizer.step()
            """),
        # A project utility named like a clip.
        Valid("""
            import torch.nn as nn
            rnn = nn.RNN(4, 4)
            for x in loader:
                optimizer.zero_grad()
                rnn(x)[0].sum().backward()
                clip_gradient(optimizer, grad_clip)
                optimizer.step()
            """),
    ]
    INVALID = [
        # The recurrent layers sit in user modules nested inside the trained one (another file).
        Invalid(
            """
            import torch
            from models import Translator
            model = Translator()
            opt = torch.optim.Adam(model.parameters())
            for src, tgt in loader:
                opt.zero_grad()
                model(src, tgt).backward()
                opt.step()
            """,
            line=8,
            files={"models.py": """
                import torch.nn as nn
                class Encoder(nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.cell = nn.LSTMCell(32, 64)
                class Translator(nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.encoder = Encoder()
                        self.head = nn.Linear(64, 10)
                """},
        ),
        Invalid(
            """
            import torch
            import torch.nn as nn
            model = nn.LSTM(10, 20)
            optimizer = torch.optim.Adam(model.parameters())
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x)[0], y)
                loss.backward()
                optimizer.step()
            """,
            line=9, column=5,
        ),
        # The class is defined in another file of the run.
        Invalid(
            """
            import torch
            from model import Seq2Seq
            model = Seq2Seq(vocab, 256).to("cuda")
            opt = torch.optim.SGD(model.parameters(), lr=1.0)
            for src, tgt in loader:
                opt.zero_grad()
                model(src, tgt).backward()
                opt.step()
            """,
            line=8,
            files={"model.py": """
                import torch.nn as nn
                class Seq2Seq(nn.Module):
                    def __init__(self, vocab, hidden):
                        super().__init__()
                        self.encoder = nn.LSTM(hidden, hidden)
            """},
        ),
        # The model reaches the loop as a parameter; the file calls the function with it.
        Invalid(
            """
            import torch.nn as nn

            class CharRNN(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.gru = nn.GRU(64, 128, batch_first=True)

            def train(model, loader, optimizer):
                for x, y in loader:
                    optimizer.zero_grad()
                    loss = model(x, y)
                    loss.backward()
                    optimizer.step()

            net = CharRNN()
            train(net, loader, opt)
            """,
            line=13, column=9,
        ),
        # One optimizer over an encoder (another module, imported as a whole) and a GRU decoder.
        Invalid(
            """
            import torch
            import seq2seq_models as sm
            encoder = sm.EncoderCNN(128)
            decoder = sm.DecoderRNN(128, 1000)
            params = list(encoder.parameters()) + list(decoder.parameters())
            optimizer = torch.optim.Adam(params, lr=0.001)

            def train(src, target):
                loss = criterion(decoder(encoder(src)), target)
                encoder.zero_grad()
                decoder.zero_grad()
                loss.backward()
                optimizer.step()

            for src, target in loader:
                train(src, target)
            """,
            line=13,
            files={"seq2seq_models.py": """
                import torch.nn as nn
                class EncoderCNN(nn.Module):
                    def __init__(self, hidden):
                        super().__init__()
                        self.conv = nn.Conv2d(3, hidden, 3)
                class DecoderRNN(nn.Module):
                    def __init__(self, hidden, vocab):
                        super().__init__()
                        self.gru = nn.GRU(hidden, hidden)
                        self.out = nn.Linear(hidden, vocab)
                """},
        ),
        # The model class trains itself; its optimizer is handed in by a setter.
        Invalid("""
            import torch.nn as nn
            class TextRNN(nn.Module):
                def __init__(self, vocab):
                    super().__init__()
                    self.embeddings = nn.Embedding(vocab, 300)
                    self.lstm = nn.LSTM(300, 64)

                def add_optimizer(self, optimizer):
                    self.optimizer = optimizer

                def run_epoch(self, batches):
                    for x, y in batches:
                        self.optimizer.zero_grad()
                        loss = self.loss_op(self.__call__(x), y)
                        loss.backward()
                        self.optimizer.step()
            """, line=16),
        # The model class comes from a star import.
        Invalid(
            """
            import torch
            from helpers import *
            from model import *
            decoder = RNN(100, 50, 100, 2)
            decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=0.01)

            def train(inp, target):
                decoder.zero_grad()
                loss = criterion(decoder(inp), target)
                loss.backward()
                decoder_optimizer.step()

            for epoch in range(100):
                train(*random_training_set())
            """,
            line=11,
            files={"model.py": """
                import torch.nn as nn
                class RNN(nn.Module):
                    def __init__(self, input_size, hidden_size, output_size, n_layers):
                        super().__init__()
                        self.gru = nn.GRU(hidden_size, hidden_size, n_layers)
                """},
        ),
        # The model is a Sequential holding an LSTM, stored on self.
        Invalid(
            """
            import torch
            from torch import nn
            class Trainer:
                def __init__(self):
                    self.net = nn.Sequential(nn.Embedding(100, 32), nn.LSTM(32, 32))
                    self.optimizer = torch.optim.Adam(self.net.parameters())

                def fit(self, loader):
                    for x in loader:
                        self.optimizer.zero_grad()
                        self.loss(x).backward()
                        self.optimizer.step()
            """,
            line=12,
        ),
    ]

    def check(self) -> None:
        if self.loops.hooks:
            return
        for loop, events in self.loops.training_loops():
            if any(e.kind == "clip" for e in events):
                continue
            steps = [e for e in events if self.loops.is_step(e)]
            classes: list[str] = []
            recurrent = False
            for step in steps:
                for verdict in self._verdicts(loop, step, events):
                    if verdict is True:
                        recurrent = True
                    elif verdict and verdict not in classes:
                        classes.append(verdict)
            if recurrent:
                self.report(steps[0].node)
            elif classes:  # one optimizer may train several models (encoder and decoder): any recurrent one
                self.report_if(Condition("recurrent", "|".join(classes)), steps[0].node)

    def _verdicts(self, loop: Scope, step: Event, events: list[Event]) -> list[_Verdict]:
        models = optimizer_bindings(self.loops, step, loop)
        if not models:
            models = [(e.name, e.scope) for e in events if e.kind == "call" and e.name and e.scope.inside(loop)]
        return [v for name, scope in models for v in self._resolve(name, scope, 0)]

    def _resolve(self, name: str, scope: Scope, depth: int) -> list[_Verdict]:
        """What the model bound to ``name`` in ``scope`` is: its bindings, or the arguments of its function's calls."""
        if name in _SELF_CALLS:  # a method of the model trains it: ``self(x)``, ``Adam(self.parameters())``
            owner = next((s for s in scope.ancestors() if s.kind == "class"), None)
            return [owner.name] if owner is not None and scope.function().kind == "def" else []
        bindings = self.loops.bindings(name, scope)
        if bindings:
            return [self._classify(b.expr) for b in bindings]
        func = scope.function()
        if depth >= 2 or func.kind != "def" or name not in func.params:
            return []
        index = func.params.index(name)
        found: list[_Verdict] = []
        for site in self.loops.call_sites(func):
            offset = 1 if func.params[:1] == ["self"] and (site.name or "").startswith("self.") else 0
            arg = get_arg(site.node, name, index - offset)  # type: ignore[arg-type]
            value = arg.value if arg is not None else None
            if isinstance(value, cst.Call):
                found.append(self._classify(value))
            elif dotted_name(value) is not None:
                found.extend(self._resolve(dotted_name(value), site.scope, depth + 1))  # type: ignore[arg-type]
        return found

    def _classify(self, expr: Optional[cst.BaseExpression]) -> _Verdict:
        expr = strip_wrappers(self.context, expr)
        if not isinstance(expr, cst.Call):
            return False
        qual = self.qualname(expr.func)
        if qual in RECURRENT_LAYERS or contains_recurrent(self.context, expr):
            return True
        name = dotted_name(expr.func)
        if qual is not None and qual.startswith("torch"):
            return False
        short = name.rsplit(".", 1)[-1] if name else ""
        # The imported path (``seq2seq_models.EncoderRNN``) lets the project pass find the right file.
        return (qual or short) if short[:1].isupper() else False


# How a method of a model class calls (or hands the optimizer) the model itself.
_SELF_CALLS = frozenset({"self", "self.__call__", "self.forward"})

"""Tiny CPU building blocks for the checks' passing and failing example setups."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from pytest_traincheck.harness.spec import Training

FEATURES, CLASSES, SAMPLES = 8, 3, 16


def blobs(n: int = SAMPLES, classes: int = CLASSES, features: int = FEATURES, seed: int = 0) -> tuple:
    """Return separable (inputs, labels), drawn from a private generator (global RNG untouched)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centers = torch.randn(classes, features, generator=g) * 3
    return centers[y] + torch.randn(n, features, generator=g) * 0.5, y


def binary_blobs(n: int = SAMPLES, features: int = FEATURES) -> tuple:
    """Return (inputs, float targets of shape (n, 1)) for binary classification."""
    x, y = blobs(n, 2, features)
    return x, y.float().unsqueeze(1)


def sequences(n: int = SAMPLES, steps: int = 5, features: int = 4) -> tuple:
    """Return (inputs (n, steps, features), labels) for a recurrent classifier."""
    x, y = blobs(n, CLASSES, steps * features)
    return x.view(n, steps, features), y


class MLP(nn.Module):
    """Linear -> ReLU -> Linear, optionally with dropout/batchnorm/an unused layer."""

    def __init__(self, out: int = CLASSES, dropout: float = 0.0, batchnorm: bool = False,
                 unused: bool = False, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, hidden, bias=not batchnorm)
        self.bn = nn.BatchNorm1d(hidden) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc2 = nn.Linear(hidden, out)
        self.extra = nn.Linear(hidden, out) if unused else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


class RecurrentNet(nn.Module):
    """GRU over the sequence, classify from the last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 16, batch_first=True)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def good_step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """The reference step: zero_grad -> forward -> loss -> backward -> step."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def good_evaluate(model: nn.Module, loader: Any) -> float:
    """Evaluate in eval mode without gradients, then restore train mode."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train()
    return correct / max(total, 1)


def adam(lr: float = 0.05) -> Callable[[Any], Any]:
    """Return an Adam factory."""
    return lambda params: torch.optim.Adam(params, lr=lr)


def setup(name: str = "example", **overrides: Any) -> Training:
    """Return a correct tiny classification setup, with ``overrides`` applied."""
    fields: dict[str, Any] = dict(name=name, model=MLP, loss_fn=nn.CrossEntropyLoss(), optimizer=adam(),
                                  data=[blobs()], step=good_step)
    fields.update(overrides)
    return Training(**fields)


def two_models(body: Callable[[], nn.Module] = MLP, name: str = "two-models") -> Training:
    """Return a setup with a dict of models (a body and a head), each with its own optimizer."""
    def step(models: Any, batch: Any, optimizers: Any, loss_fn: Callable[..., Any]) -> Any:
        x, y = batch
        for opt in optimizers.values():
            opt.zero_grad()
        loss = loss_fn(models["head"](models["body"](x)), y)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        return loss

    return setup(name, model=lambda: {"body": body(), "head": nn.Linear(CLASSES, CLASSES)},
                 optimizer={"body": adam(), "head": adam()}, step=step)

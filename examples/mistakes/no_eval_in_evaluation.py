"""TRN302 evaluation-in-train-mode: evaluation runs under no_grad but without `model.eval()`.

`torch.no_grad()` only stops gradient tracking; it does not switch Dropout
off or make BatchNorm use its running statistics. This evaluation scores a
randomly thinned network, so the accuracy is noisy and too low.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int = 128, features: int = 8, classes: int = 3, seed: int = 0) -> TensorDataset:
    """Return separable Gaussian blobs, one per class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centers = torch.randn(classes, features, generator=torch.Generator().manual_seed(0)) * 3
    return TensorDataset(centers[labels] + torch.randn(n, features, generator=g), labels)


def make_model() -> nn.Module:
    """Return an MLP with Dropout, whose behaviour depends on the mode."""
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one optimizer step in training mode and return the loss."""
    inputs, targets = batch
    model.train()
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def evaluate(model: nn.Module, loader: Any) -> float:
    """Return accuracy (the mistake: no `model.eval()`, so Dropout stays active)."""
    correct = total = 0
    with torch.no_grad():
        for inputs, targets in loader:
            correct += int((model(inputs).argmax(1) == targets).sum())
            total += len(targets)
    return correct / total


def fit(epochs: int = 3) -> float:
    """Train with an evaluation after every epoch; return the last accuracy."""
    model, loss_fn = make_model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_loader = DataLoader(make_data(), batch_size=16, shuffle=True)
    test_loader = DataLoader(make_data(seed=1), batch_size=64)
    accuracy = 0.0
    for _ in range(epochs):
        for batch in train_loader:
            train_step(model, batch, optimizer, loss_fn)
        accuracy = evaluate(model, test_loader)
    return accuracy


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity`."""
    from pytest_traincheck import Training

    return Training(
        name="no-eval-in-evaluation",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        eval_data=DataLoader(make_data(seed=1), batch_size=64),
        step=train_step,
        evaluate=evaluate,
        num_classes=3,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN302"]))

"""TRN101 missing-zero-grad: the training loop never clears gradients.

`backward()` adds into `.grad`; without `optimizer.zero_grad()` every step
uses the sum of all past gradients, so the updates grow and point the wrong
way. Run `python no_zero_grad.py` to see the checks flag it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int = 128, features: int = 8, classes: int = 3) -> TensorDataset:
    """Return separable Gaussian blobs, one per class."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    centers = torch.randn(classes, features, generator=g) * 3
    return TensorDataset(centers[labels] + torch.randn(n, features, generator=g), labels)


def make_model() -> nn.Module:
    """Return a small MLP classifier."""
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def train_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> float:
    """Train one epoch (the mistake: no `optimizer.zero_grad()` in the loop)."""
    model.train()
    total = 0.0
    for inputs, targets in loader:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(loader)


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity`."""
    from pytest_traincheck import Training

    return Training(
        name="no-zero-grad",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        train_epoch=train_epoch,
        num_classes=3,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN101"]))

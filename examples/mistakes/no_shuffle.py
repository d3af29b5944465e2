"""TRN401 train-loader-not-shuffled: the training DataLoader does not shuffle.

The data are stored class by class, as many datasets are on disk. Without
`shuffle=True` every batch holds a single class and every epoch repeats the
same order: the model chases the class of the current batch and forgets the
others. Pass `shuffle=True` (or a sampler) to the training loader.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int = 96, features: int = 8, classes: int = 3) -> TensorDataset:
    """Return Gaussian blobs sorted by class (all class 0, then all class 1, ...)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) * classes // n
    centers = torch.randn(classes, features, generator=g) * 3
    return TensorDataset(centers[labels] + torch.randn(n, features, generator=g), labels)


def make_model() -> nn.Module:
    """Return a small MLP classifier."""
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one correct optimizer step and return the loss."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake: the loader never shuffles)."""
    from pytest_traincheck import Training

    train_loader = DataLoader(make_data(), batch_size=16)
    return Training(
        name="no-shuffle",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=train_loader,
        step=train_step,
        num_classes=3,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN401"]))

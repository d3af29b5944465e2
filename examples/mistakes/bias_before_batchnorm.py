"""TRN202 bias-before-batchnorm: a Conv2d keeps its default bias right before BatchNorm2d.

BatchNorm subtracts the per-channel mean, which removes any constant the conv
added: the bias gets (almost) zero gradient and is dead weight. Pass
`bias=False` to a conv (or linear) layer that feeds a BatchNorm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int = 64, classes: int = 2) -> TensorDataset:
    """Return 1x8x8 images: class 1 has a bright centre square, class 0 does not."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    images[labels == 1, :, 2:6, 2:6] += 2.0
    return TensorDataset(images, labels)


def make_model() -> nn.Module:
    """Return a tiny CNN (the mistake: the conv's default bias=True before BatchNorm)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one correct optimizer step and return the loss."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity`."""
    from pytest_traincheck import Training

    return Training(
        name="bias-before-batchnorm",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        step=train_step,
        num_classes=2,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN202"]))

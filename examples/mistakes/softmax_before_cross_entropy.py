"""TRN201 softmax-before-cross-entropy: the model returns softmax probabilities to CrossEntropyLoss.

`nn.CrossEntropyLoss` applies log-softmax itself. Feeding it probabilities
applies softmax twice: the loss can barely move (its inputs live in [0, 1])
and the gradients vanish as the model gets confident. Return logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int = 128, features: int = 8, classes: int = 3) -> TensorDataset:
    """Return separable Gaussian blobs, one per class."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    centers = torch.randn(classes, features, generator=g) * 3
    return TensorDataset(centers[labels] + torch.randn(n, features, generator=g), labels)


class Classifier(nn.Module):
    """An MLP whose forward ends with softmax (the mistake)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one correct optimizer step and return the loss."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def fit(epochs: int = 5) -> float:
    """Train the way a script would (the same step as `train_step`); return the last loss."""
    model = Classifier()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(make_data(), batch_size=16, shuffle=True)
    loss = torch.zeros(())
    for _ in range(epochs):
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
    return loss.item()


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity`."""
    from pytest_traincheck import Training

    return Training(
        name="softmax-before-cross-entropy",
        model=Classifier,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        step=train_step,
        num_classes=3,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN201"]))

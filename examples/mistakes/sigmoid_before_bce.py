"""TRN204 sigmoid-before-bce: the model applies sigmoid and the loss is `BCELoss`.

`sigmoid` followed by `log` loses precision for confident predictions (the
loss saturates, gradients vanish, and `BCELoss` clamps log(0) to -100).
Return the logits and use `nn.BCEWithLogitsLoss`, which fuses both stably.
(Sigmoid into `BCEWithLogitsLoss` is worse: a double sigmoid; same code.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int = 128, features: int = 8) -> TensorDataset:
    """Return two separable Gaussian blobs with float targets of shape (n, 1)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    centers = torch.randn(2, features, generator=g) * 3
    inputs = centers[labels] + torch.randn(n, features, generator=g)
    return TensorDataset(inputs, labels.float().unsqueeze(1))


class BinaryClassifier(nn.Module):
    """An MLP whose forward ends with sigmoid (the mistake, with BCELoss)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x))))


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
    model = BinaryClassifier()
    criterion = nn.BCELoss()
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
        name="sigmoid-before-bce",
        model=BinaryClassifier,
        loss_fn=nn.BCELoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        step=train_step,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN204"]))

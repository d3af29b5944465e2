"""TRN205 nll-loss-on-logits: `NLLLoss` is given raw logits instead of log-probabilities.

`NLLLoss` only picks `-input[target]`; it expects `log_softmax` outputs. On
raw logits the loss is unbounded below: the model "improves" by making the
target logit huge, not by separating the classes. Add `log_softmax(dim=1)`
to the model's output, or use `CrossEntropyLoss` on the logits.
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


class LogitClassifier(nn.Module):
    """An MLP that returns logits (right for CrossEntropyLoss, wrong for NLLLoss)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


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
    model = LogitClassifier()
    criterion = nn.NLLLoss()
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
    """Declare this setup for `pytest --train-sanity` (the mistake: NLLLoss on logits)."""
    from pytest_traincheck import Training

    return Training(
        name="nll-loss-on-logits",
        model=LogitClassifier,
        loss_fn=nn.NLLLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        step=train_step,
        num_classes=3,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN205"]))

"""TRN403 view-as-permute: `.view()` after `.permute()` reinterprets memory and mixes samples.

The forward moves time to the front with `permute`, then (after `.view()`
complained, with `.contiguous()` added) flattens with `.view(batch, -1)`. The
memory is now time-major, so "row i" of the result holds time steps of
several different samples: each prediction depends on other samples in the
batch. Use `x.reshape(batch, -1)` on the original layout (or `flatten(1)`),
and `permute` only to move axes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

STEPS, FEATURES, CLASSES = 6, 4, 3


def make_data(n: int = 96) -> TensorDataset:
    """Return sequences (n, STEPS, FEATURES) whose class sets the mean of feature 0."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % CLASSES
    x = torch.randn(n, STEPS, FEATURES, generator=g)
    x[:, :, 0] += 2.0 * labels[:, None].float()
    return TensorDataset(x, labels)


class SequenceClassifier(nn.Module):
    """Flatten a sequence and classify it (the mistake: permute, then view)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(STEPS * FEATURES, 32)
        self.fc2 = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        time_major = x.permute(1, 0, 2)  # (steps, batch, features)
        flat = time_major.contiguous().view(batch, -1)  # rows now mix samples
        return self.fc2(torch.relu(self.fc1(flat)))


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
    model = SequenceClassifier()
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
        name="view-as-permute",
        model=SequenceClassifier,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        step=train_step,
        num_classes=CLASSES,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN403"]))

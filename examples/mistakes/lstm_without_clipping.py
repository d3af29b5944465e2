"""TRN105 missing-grad-clipping: an LSTM is trained without gradient clipping.

Gradients through many recurrent steps can explode: one bad batch produces a
huge update that wrecks the weights (the loss jumps or turns NaN). Call
`torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)` between
`loss.backward()` and `optimizer.step()`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

STEPS, FEATURES, CLASSES = 12, 4, 2


def make_data(n: int = 96) -> TensorDataset:
    """Return sequences whose class is the sign of the sum of feature 0 over time."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, STEPS, FEATURES, generator=g)
    labels = (x[:, :, 0].sum(dim=1) > 0).long()
    return TensorDataset(x, labels)


class LSTMClassifier(nn.Module):
    """Read the sequence with an LSTM and classify from the last hidden state."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.lstm = nn.LSTM(FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])  # logits


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one optimizer step (the mistake: no clipping between backward and step)."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def fit(epochs: int = 5) -> float:
    """Train the way a script would (the same step as `train_step`); return the last loss."""
    model = LSTMClassifier()
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
        name="lstm-without-clipping",
        model=LSTMClassifier,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        step=train_step,
        num_classes=CLASSES,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN105"]))

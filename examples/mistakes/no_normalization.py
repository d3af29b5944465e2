"""TRN402 inputs-not-normalized: images go through `ToTensor()` with no `Normalize`.

These images are float arrays of raw 0..255 pixel values. `ToTensor()` only
rescales *uint8* images to [0, 1]; floats pass through unchanged, so the
network sees inputs with mean ~100: the first layer saturates, the initial
loss is far from ln(classes), and the learning rate that works for
standardized data diverges. Add `transforms.Normalize(mean, std)`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class RawImages(Dataset):
    """Serve 8x8 float images with 0..255 pixel values; class 1 has a brighter centre."""

    def __init__(self, n: int = 96, transform: Callable[[Any], Any] = transforms.ToTensor()) -> None:
        rng = np.random.default_rng(0)
        self.labels = np.arange(n) % 2
        self.images = rng.uniform(0, 160, size=(n, 8, 8)).astype(np.float32)
        self.images[self.labels == 1, 2:6, 2:6] += 90.0
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def make_model() -> nn.Module:
    """Return a small MLP over the flattened image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one correct optimizer step and return the loss."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake: ToTensor without Normalize)."""
    from pytest_traincheck import Training

    train_transform = transforms.Compose([transforms.ToTensor()])
    return Training(
        name="no-normalization",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01),
        data=DataLoader(RawImages(transform=train_transform), batch_size=16, shuffle=True),
        step=train_step,
        num_classes=2,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN402"]))

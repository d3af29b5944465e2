"""TRN501 torch-load-discarded: the checkpoint is loaded and its result thrown away.

The seed guide does this (`if load_model: torch.load(save_file)`): the file is
read, nothing is restored, and training silently starts from scratch.
Assign the result and load it: `checkpoint = torch.load(path,
weights_only=True)`, then `model.load_state_dict(checkpoint["state_dict"])`
and `optimizer.load_state_dict(checkpoint["optimizer"])`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CHECKPOINT = Path(tempfile.gettempdir()) / "traincheck-example-pretrained.pt"


def make_data(n: int = 128, features: int = 8, classes: int = 3) -> TensorDataset:
    """Return separable Gaussian blobs, one per class."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    centers = torch.randn(classes, features, generator=g) * 3
    return TensorDataset(centers[labels] + torch.randn(n, features, generator=g), labels)


def build_model() -> nn.Module:
    """Return a small MLP classifier, freshly initialized."""
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Save model and optimizer state."""
    torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


def load_checkpoint(model: nn.Module, path: Path) -> nn.Module:
    """Restore ``model`` from ``path`` (the mistake: the loaded checkpoint is discarded)."""
    torch.load(path, weights_only=True)
    return model


def make_model() -> nn.Module:
    """Return the model, resumed from the pretrained checkpoint."""
    return load_checkpoint(build_model(), CHECKPOINT)


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one correct optimizer step and return the loss."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the pretrained checkpoint is written first)."""
    from pytest_traincheck import Training

    pretrained = build_model()
    save_checkpoint(pretrained, torch.optim.Adam(pretrained.parameters()), CHECKPOINT)
    return Training(
        name="torch-load-discarded",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=16, shuffle=True),
        step=train_step,
        num_classes=3,
    )


if __name__ == "__main__":
    model = build_model()
    save_checkpoint(model, torch.optim.Adam(model.parameters()), CHECKPOINT)
    restored = load_checkpoint(build_model(), CHECKPOINT)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    print(f"weights restored: {same}  (traincheck lint flags TRN501 on load_checkpoint)")

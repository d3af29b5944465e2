"""TRN401 train-loader-not-shuffled: the MNIST training loader is built without `shuffle=True`.

`DataLoader(train_data, batch_size=64)` reads the dataset in index order, so
every epoch presents the same batches in the same sequence. The model then
learns the order as well as the digits: the loss curve shows a repeating
pattern and the last batches of each epoch weigh most. Pass `shuffle=True`
to the training loader (the test loader's order does not matter).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def make_loaders(root: Any) -> tuple[DataLoader, DataLoader]:
    """Return (train, test) MNIST loaders; the training one never shuffles."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    train_data = datasets.MNIST(root, train=True, transform=transform, download=False)
    test_data = datasets.MNIST(root, train=False, transform=transform, download=False)
    train_loader = DataLoader(train_data, batch_size=64)  # the mistake: shuffle=False by default
    test_loader = DataLoader(test_data, batch_size=64)
    return train_loader, test_loader


def make_model() -> nn.Module:
    """Return a small MLP over the flattened 28x28 digit."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 10))


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one correct optimizer step and return the loss."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake: the training loader never shuffles)."""
    from pytest_traincheck import Training
    from pytest_traincheck.fixtures.mnist import mnist_root

    train_loader, test_loader = make_loaders(mnist_root())
    return Training(
        name="data-no-shuffle",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        data=train_loader,
        eval_data=test_loader,
        step=train_step,
        num_classes=10,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN401"]))

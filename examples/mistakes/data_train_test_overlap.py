"""TRN406 train-test-overlap: the validation split is carved out of the training set but never removed from it.

The script takes 1,000 MNIST training images as a validation set with
`Subset(train_data, range(1000))`, then trains on the whole `train_data`,
those 1,000 images included. Validation accuracy then measures memorization,
not generalization, and early stopping or model selection on it is wrong.
Split once into disjoint parts, e.g. `random_split(train_data, [3000, 1000])`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from pytest_traincheck.fixtures.reference import MNIST_MEAN, MNIST_STD, Net, make_optimizer, train_step


def make_loaders(root: Any) -> tuple[DataLoader, DataLoader]:
    """Return (train, validation) loaders; the validation images are also in the training loader."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    train_data = datasets.MNIST(root, train=True, transform=transform, download=False)
    val_data = Subset(train_data, range(1000))  # the mistake: these stay in train_data below
    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(train_data, batch_size=64, shuffle=True, generator=generator)
    val_loader = DataLoader(val_data, batch_size=64)
    return train_loader, val_loader


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake: validation samples are trained on).

    The model, step and optimizer are traincheck's reference ones: only the data is wrong.
    """
    from pytest_traincheck import Training
    from pytest_traincheck.fixtures.mnist import mnist_root

    train_loader, val_loader = make_loaders(mnist_root())
    return Training(
        name="data-train-test-overlap",
        model=Net,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=make_optimizer,
        data=train_loader,
        eval_data=val_loader,
        step=train_step,
        num_classes=10,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN406"]))

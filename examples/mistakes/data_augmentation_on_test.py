"""TRN404 augmentation-on-eval-data: the MNIST test set is loaded with random rotations and crops.

One `transform` with `RandomRotation` and `RandomCrop` is shared by the
training and the test dataset. Augmenting training data is right; augmenting
the test data makes every evaluation score a different random distortion of
the test images, so the accuracy is noisy from run to run and biased low.
Give the test set deterministic transforms only (`ToTensor`, `Normalize`).
`traincheck lint` reports it (TRN404); the dynamic checks stay quiet.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from pytest_traincheck.fixtures.reference import MNIST_MEAN, MNIST_STD, Net, evaluate, make_optimizer, train_step


def make_loaders(root: Any) -> tuple[DataLoader, DataLoader]:
    """Return (train, test) MNIST loaders that share one augmenting transform."""
    transform = transforms.Compose([
        transforms.RandomRotation(10),
        transforms.RandomCrop(28, padding=2),
        transforms.ToTensor(),
        transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
    ])
    train_data = datasets.MNIST(root, train=True, transform=transform, download=False)
    test_data = datasets.MNIST(root, train=False, transform=transform, download=False)  # the mistake
    generator = torch.Generator().manual_seed(0)
    return (DataLoader(train_data, batch_size=64, shuffle=True, generator=generator),
            DataLoader(test_data, batch_size=64))


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake is in the test transform: lint finds it).

    The model, step and optimizer are traincheck's reference ones: only the data is wrong.
    """
    from pytest_traincheck import Training
    from pytest_traincheck.fixtures.mnist import mnist_root

    train_loader, test_loader = make_loaders(mnist_root())
    return Training(
        name="data-augmentation-on-test",
        model=Net,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=make_optimizer,
        data=train_loader,
        eval_data=test_loader,
        step=train_step,
        evaluate=evaluate,
        num_classes=10,
    )


if __name__ == "__main__":
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", "--isolated", "--select", "TRN404", __file__])

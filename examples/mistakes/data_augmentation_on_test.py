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

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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


def make_model() -> nn.Module:
    """Return a small MLP over the flattened 28x28 digit."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 10))


def evaluate(model: nn.Module, loader: Any) -> float:
    """Return the accuracy on ``loader``, in eval mode without gradients, mode restored."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, targets in loader:
            correct += int((model(inputs).argmax(dim=1) == targets).sum())
            total += len(targets)
    model.train(was_training)
    return correct / max(total, 1)


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """Take one correct optimizer step and return the loss."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake is in the test transform: lint finds it)."""
    from pytest_traincheck import Training
    from pytest_traincheck.fixtures.mnist import mnist_root

    train_loader, test_loader = make_loaders(mnist_root())
    return Training(
        name="data-augmentation-on-test",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
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

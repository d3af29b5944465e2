"""TRN402 inputs-not-normalized: MNIST goes through `ToTensor()` and no `Normalize`.

`ToTensor()` scales the pixels to [0, 1]: mean ~0.13, std ~0.31 on MNIST,
never zero-centred. Every input of the first layer is non-negative, so its
weight gradients share a sign per hidden unit and updates zig-zag; the
initialization assumes unit-variance inputs. The seed's advice: add
`transforms.Normalize((0.1307,), (0.3081,))` after `ToTensor()`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from pytest_traincheck.fixtures.reference import Net, make_optimizer, train_step


def make_loaders(root: Any) -> tuple[DataLoader, DataLoader]:
    """Return (train, test) MNIST loaders whose images are only converted to [0, 1] tensors."""
    transform = transforms.Compose([transforms.ToTensor()])  # the mistake: no Normalize
    train_data = datasets.MNIST(root, train=True, transform=transform, download=False)
    test_data = datasets.MNIST(root, train=False, transform=transform, download=False)
    generator = torch.Generator().manual_seed(0)
    return (DataLoader(train_data, batch_size=64, shuffle=True, generator=generator),
            DataLoader(test_data, batch_size=64))


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake: ToTensor without Normalize).

    The model, step and optimizer are traincheck's reference ones: only the data is wrong.
    """
    from pytest_traincheck import Training
    from pytest_traincheck.fixtures.mnist import mnist_root

    train_loader, test_loader = make_loaders(mnist_root())
    return Training(
        name="data-no-normalization",
        model=Net,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=make_optimizer,
        data=train_loader,
        eval_data=test_loader,
        step=train_step,
        num_classes=10,
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN402"]))

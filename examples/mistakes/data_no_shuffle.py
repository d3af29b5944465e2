"""TRN401 train-loader-not-shuffled: the MNIST training loader is built without `shuffle=True`.

`DataLoader(train_data, batch_size=64)` reads the dataset in index order, so
every epoch presents the same batches in the same sequence. The model then
learns the order as well as the digits: the loss curve shows a repeating
pattern and the last batches of each epoch weigh most. Pass `shuffle=True`
to the training loader (the test loader's order does not matter).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from pytest_traincheck.fixtures.reference import MNIST_MEAN, MNIST_STD, Net, make_optimizer, train_step


def make_loaders(root: Any) -> tuple[DataLoader, DataLoader]:
    """Return (train, test) MNIST loaders; the training one never shuffles."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    train_data = datasets.MNIST(root, train=True, transform=transform, download=False)
    test_data = datasets.MNIST(root, train=False, transform=transform, download=False)
    train_loader = DataLoader(train_data, batch_size=64)  # the mistake: shuffle=False by default
    test_loader = DataLoader(test_data, batch_size=64)
    return train_loader, test_loader


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake: the training loader never shuffles).

    The model, step and optimizer are traincheck's reference ones: only the data is wrong.
    """
    from pytest_traincheck import Training
    from pytest_traincheck.fixtures.mnist import mnist_root

    train_loader, test_loader = make_loaders(mnist_root())
    return Training(
        name="data-no-shuffle",
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

    print(run_checks(make_training(), select=["TRN401"]))

"""Train and test the MNIST classifier on the sample bundled with traincheck (or your own MNIST).

Run ``python -m mnist_example.train --epochs 1``; ``make_training()`` declares
the same setup for ``pytest --train-sanity``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_example.model import Net

# The MNIST training set's pixel mean and std (after ToTensor): inputs become ~N(0, 1).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def make_loaders(root: Optional[str] = None, batch_size: int = 64, test_batch_size: int = 1000,
                 seed: int = 1) -> tuple[DataLoader, DataLoader]:
    """Return (train, test) loaders; ``root=None`` uses the MNIST sample bundled with traincheck."""
    if root is None:
        from pytest_traincheck.fixtures.mnist import mnist_root

        root = str(mnist_root())
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    train_set = datasets.MNIST(root, train=True, transform=transform, download=False)
    test_set = datasets.MNIST(root, train=False, transform=transform, download=False)
    # shuffle=True: a fixed order repeats the same batches every epoch and biases the updates.
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    test_loader = DataLoader(test_set, batch_size=test_batch_size, shuffle=False)
    return train_loader, test_loader


def make_optimizer(params: Any, lr: float = 1e-3) -> optim.Optimizer:
    """Return Adam over ``params``."""
    return optim.Adam(params, lr=lr)


def train_step(model: nn.Module, batch: Any, optimizer: optim.Optimizer,
               loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Take one optimizer step on ``batch`` and return the loss."""
    data, target = batch
    device = next(model.parameters()).device
    data, target = data.to(device), target.to(device)
    optimizer.zero_grad()  # gradients accumulate across backward() calls otherwise
    loss = loss_fn(model(data), target)
    loss.backward()
    optimizer.step()
    return loss


def train(model: nn.Module, device: torch.device, train_loader: DataLoader, optimizer: optim.Optimizer,
          loss_fn: Callable[..., torch.Tensor], epoch: int, log_interval: int = 20) -> float:
    """Train one epoch and return its mean loss."""
    model.to(device)
    model.train()  # Dropout on, BatchNorm updating its running statistics
    total, batches = 0.0, 0
    for batch_idx, batch in enumerate(train_loader):
        loss = train_step(model, batch, optimizer, loss_fn).item()
        total, batches = total + loss, batches + 1
        if batch_idx % log_interval == 0:
            seen = batch_idx * train_loader.batch_size
            print(f"Train Epoch: {epoch} [{seen}/{len(train_loader.dataset)}]\tLoss: {loss:.4f}")
    return total / max(batches, 1)


def test(model: nn.Module, device: torch.device, test_loader: DataLoader,
         loss_fn: Callable[..., torch.Tensor]) -> tuple[float, float]:
    """Return (mean loss, accuracy) on ``test_loader``; the model's mode is restored after."""
    was_training = model.training
    model.eval()  # Dropout off, BatchNorm uses its running statistics
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():  # no graph needed to score predictions
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            total_loss += loss_fn(output, target).item() * len(target)
            correct += int((output.argmax(dim=1) == target).sum())
            seen += len(target)
    model.train(was_training)
    accuracy = correct / max(seen, 1)
    print(f"Test set: Average loss: {total_loss / max(seen, 1):.4f}, Accuracy: {correct}/{seen} ({accuracy:.1%})")
    return total_loss / max(seen, 1), accuracy


def evaluate(model: nn.Module, loader: Any) -> float:
    """Return accuracy on ``loader`` (the form `pytest --train-sanity` calls)."""
    device = next(model.parameters()).device
    return test(model, device, loader, nn.CrossEntropyLoss())[1]


def make_training() -> Any:
    """Declare this project's training setup for ``pytest --train-sanity``."""
    from pytest_traincheck import Training

    train_loader, test_loader = make_loaders()
    return Training(
        name="mnist-cnn",
        model=Net,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=make_optimizer,
        data=train_loader,
        eval_data=test_loader,
        step=train_step,
        evaluate=evaluate,
        num_classes=10,
    )


def save(model: nn.Module, optimizer: optim.Optimizer, epoch: int, path: Path) -> None:
    """Save model and optimizer state, enough to resume training exactly."""
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, path)


def resume(model: nn.Module, optimizer: optim.Optimizer, path: Path) -> int:
    """Load a checkpoint written by `save` into ``model`` and ``optimizer``; return its epoch."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors only
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return int(checkpoint["epoch"])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="Train a small CNN on MNIST")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    parser.add_argument("--test-batch-size", type=int, default=1000, help="test batch size (default: 1000)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to train (default: 2)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--mnist-root", default=None,
                        help="folder holding MNIST/raw/ (default: the sample bundled with traincheck)")
    parser.add_argument("--no-cuda", action="store_true", help="train on the CPU even if CUDA is available")
    parser.add_argument("--save-model", type=Path, default=None, help="write a checkpoint here after training")
    parser.add_argument("--resume", type=Path, default=None, help="continue from this checkpoint")
    parser.add_argument("--log-interval", type=int, default=20, help="batches between log lines (default: 20)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Train, test after each epoch, optionally checkpoint; return the final test accuracy."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # same seed, same initial weights, dropout masks and batch order
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    train_loader, test_loader = make_loaders(args.mnist_root, args.batch_size, args.test_batch_size, args.seed)
    model = Net().to(device)
    optimizer = make_optimizer(model.parameters(), args.lr)
    loss_fn = nn.CrossEntropyLoss()  # expects logits
    start = resume(model, optimizer, args.resume) if args.resume is not None else 0
    accuracy = 0.0
    for epoch in range(start + 1, start + args.epochs + 1):
        train(model, device, train_loader, optimizer, loss_fn, epoch, args.log_interval)
        accuracy = test(model, device, test_loader, loss_fn)[1]
    if args.save_model is not None:
        save(model, optimizer, start + args.epochs, args.save_model)
    return accuracy


if __name__ == "__main__":
    main()

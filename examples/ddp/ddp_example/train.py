"""Train a small classifier with DistributedDataParallel on N CPU processes (gloo) or GPUs (nccl).

Run it with `python -m ddp_example.train --world-size 2` (it starts its own processes)
or under `torchrun --nproc-per-node 2 -m ddp_example.train`. `make_training()`
declares the same model, step, loaders, evaluation and checkpoints for
`pytest --train-sanity`, which runs them on 2 ranks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, TensorDataset

FEATURES, CLASSES = 8, 3


def make_dataset(n: int, seed: int) -> TensorDataset:
    """Return separable Gaussian blobs, one per class (the same on every rank for a given seed)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    centers = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(0)) * 3
    return TensorDataset(centers[labels] + torch.randn(n, FEATURES, generator=g), labels)


class Net(nn.Module):
    """A two-layer MLP classifier returning logits."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def unwrap(model: nn.Module) -> nn.Module:
    """Return the module inside DDP (checkpoints hold its state, without the `module.` prefix)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class ShardSampler(Sampler):
    """Evaluation shards without padding: rank r takes samples r, r + world, ... (each sample once)."""

    def __init__(self, n: int) -> None:
        self.n, self.rank, self.world = n, dist.get_rank(), dist.get_world_size()

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def train_loader(dataset: TensorDataset, epoch: int, batch_size: int = 16) -> DataLoader:
    """This rank's shard of the training set, reshuffled for ``epoch``."""
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler)


def eval_loader(dataset: TensorDataset, batch_size: int = 64) -> DataLoader:
    """This rank's unpadded shard of the evaluation set."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset)))


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, loss_fn: Any) -> torch.Tensor:
    """One step; DDP averages the gradients over the ranks during `backward()`."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def evaluate(model: nn.Module, loader: Any) -> float:
    """Accuracy over the whole evaluation set: correct and seen counts summed over the ranks."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for inputs, targets in loader:
            counts[0] += (model(inputs).argmax(1) == targets).sum().item()
            counts[1] += len(targets)
    model.train()
    dist.all_reduce(counts)
    return float(counts[0] / counts[1])


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Rank 0 writes the unwrapped model and the optimizer; every rank waits for the file."""
    if dist.get_rank() == 0:
        torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}, path)
    dist.barrier()


def load_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Load onto the CPU first, into the unwrapped model (works with or without DDP)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    unwrap(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    """SGD with momentum."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def run(rank: int, world_size: int, epochs: int, store: str) -> None:
    """Train on this rank: join the group, wrap in DDP, shard, evaluate, checkpoint."""
    if store:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    else:  # started by torchrun: rank and world size come from the environment
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(0)
    model = DistributedDataParallel(Net())
    optimizer = make_optimizer(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    train_set, test_set = make_dataset(480, seed=1), make_dataset(200, seed=2)
    for epoch in range(epochs):
        for batch in train_loader(train_set, epoch):
            train_step(model, batch, optimizer, loss_fn)
        accuracy = evaluate(model, eval_loader(test_set))
        if dist.get_rank() == 0:
            print(f"epoch {epoch}: test accuracy {accuracy:.3f}")
    save_checkpoint(model, optimizer, os.path.join(tempfile.gettempdir(), "ddp_example.pt"))
    dist.destroy_process_group()


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity`: the distributed checks run it on 2 ranks."""
    from pytest_traincheck import Training

    train_set, test_set = make_dataset(96, seed=1), make_dataset(40, seed=2)
    return Training(
        name="ddp-example",
        world_size=2,
        model=Net,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=make_optimizer,
        # The single-process checks' loader; each rank's own comes from `rank_data`.
        data=DataLoader(train_set, batch_size=16, sampler=RandomSampler(train_set)),
        eval_data=DataLoader(test_set, batch_size=40),
        step=train_step,
        evaluate=evaluate,
        rank_data=lambda epoch: train_loader(train_set, epoch),
        rank_eval_data=lambda: eval_loader(test_set),
        save_checkpoint=save_checkpoint,
        load_checkpoint=load_checkpoint,
        num_classes=CLASSES,
    )


def main() -> None:
    """Start the ranks (or be one, under torchrun)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if "RANK" in os.environ:
        run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args.epochs, "")
        return
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(run, args=(args.world_size, args.epochs, os.path.join(tmp, "store")), nprocs=args.world_size)


if __name__ == "__main__":
    main()

"""TRN711 loader-without-distributed-sampler: every rank trains on the whole dataset.

The training loader shuffles the full dataset on every rank instead of giving
each rank its own shard through a `DistributedSampler`: N ranks repeat the
same epoch N times over. TRN703 sees both ranks draw all 96 samples.

Run `python ddp_without_distributed_sampler.py` to see the checks flag it (2 CPU ranks, gloo).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset


def make_data(n: int, seed: int) -> TensorDataset:
    """Return separable Gaussian blobs, one per class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) * 3
    return TensorDataset(centers[labels] + torch.randn(n, 8, generator=g), labels)


def make_model() -> nn.Module:
    """Return a small MLP classifier."""
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def unwrap(model: nn.Module) -> nn.Module:
    """Return the module inside DDP."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def train_loader(dataset: TensorDataset, epoch: int) -> DataLoader:
    """The training loader (the mistake: no DistributedSampler, every rank gets everything)."""
    return DataLoader(dataset, batch_size=16, shuffle=True)


def eval_loader(dataset: TensorDataset) -> DataLoader:
    """This rank's shard of the evaluation set (40 samples: equal shards on 2 ranks, no padding)."""
    return DataLoader(dataset, batch_size=20, sampler=DistributedSampler(dataset, shuffle=False))


def train_step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> torch.Tensor:
    """One step; DDP averages the gradients during `backward()`."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def evaluate(model: nn.Module, loader: Any) -> float:
    """Accuracy over the whole evaluation set (counts summed over the ranks)."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for inputs, targets in loader:
            counts[0] += (model(inputs).argmax(1) == targets).sum().item()
            counts[1] += len(targets)
    model.train()
    dist.all_reduce(counts)
    return float(counts[0] / counts[1])


def save_checkpoint(model: nn.Module, optimizer: Any, path: str) -> None:
    """Rank 0 writes the unwrapped model and the optimizer; every rank waits."""
    if dist.get_rank() == 0:
        torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}, path)
    dist.barrier()


def load_checkpoint(model: nn.Module, optimizer: Any, path: str) -> None:
    """Load onto the CPU, into the unwrapped model."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    unwrap(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])


def run(rank: int, world_size: int, store: str) -> None:
    """The training script every rank runs."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    model = DistributedDataParallel(make_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_set, test_set = make_data(96, seed=1), make_data(40, seed=2)
    for epoch in range(2):
        for batch in train_loader(train_set, epoch):
            train_step(model, batch, optimizer, nn.CrossEntropyLoss())
        accuracy = evaluate(model, eval_loader(test_set))
        if dist.get_rank() == 0:
            print(f"epoch {epoch}: accuracy {accuracy:.3f}")
    save_checkpoint(model, optimizer, os.path.join(os.path.dirname(store), "ckpt.pt"))
    load_checkpoint(model, optimizer, os.path.join(os.path.dirname(store), "ckpt.pt"))
    dist.destroy_process_group()


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the TRN7xx checks run it on 2 ranks)."""
    from pytest_traincheck import Training

    train_set, test_set = make_data(96, seed=1), make_data(40, seed=2)
    return Training(
        name="ddp-without-distributed-sampler",
        world_size=2,
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        data=DataLoader(train_set, batch_size=16, sampler=RandomSampler(train_set)),
        eval_data=DataLoader(test_set, batch_size=40),
        step=train_step,
        evaluate=evaluate,
        rank_data=lambda epoch: train_loader(train_set, epoch),
        rank_eval_data=lambda: eval_loader(test_set),
        save_checkpoint=save_checkpoint,
        load_checkpoint=load_checkpoint,
        num_classes=3,
    )


if __name__ == "__main__":
    if "--train" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(run, args=(2, os.path.join(tmp, "store")), nprocs=2)
    else:
        from pytest_traincheck import run_checks

        print(run_checks(make_training(), select=["TRN703"]))

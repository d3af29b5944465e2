"""Tiny distributed building blocks for the TRN7xx checks' passing and failing example setups.

Every function here runs inside a rank, where the process group exists, so it can ask
`torch.distributed` for its rank and world size like user code does.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.spec import Training

DATASET = 20  # samples of the sharding/evaluation datasets: not a multiple of 3, so 3 ranks pad


def dataset(n: int = DATASET) -> TensorDataset:
    """Return a small classification dataset (fixed seed)."""
    return TensorDataset(*ex.blobs(n, seed=1))


def sgd(lr: float = 0.1) -> Callable[[Any], Any]:
    """Return an SGD factory (plain SGD: its update is proportional to the gradient)."""
    return lambda params: torch.optim.SGD(params, lr=lr)


def setup(world_size: int = 2, **overrides: Any) -> Training:
    """Return a correct tiny classification setup on ``world_size`` ranks."""
    fields: dict[str, Any] = dict(name=f"ddp{world_size}", optimizer=sgd(), world_size=world_size)
    fields.update(overrides)
    return ex.setup(**fields)


def unwrap(model: nn.Module) -> nn.Module:
    """Return the module inside DDP."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# -- training steps -----------------------------------------------------------------------------------
def step_never_syncing(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """Gradient accumulation gone wrong: every backward runs under no_sync(), so no gradient is all-reduced."""
    x, y = batch
    optimizer.zero_grad()
    with model.no_sync():
        loss = loss_fn(model(x), y)
        loss.backward()
    optimizer.step()
    return loss


def step_on_rank_zero_only(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """Only rank 0 applies the update, so the other replicas stay behind."""
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    if dist.get_rank() == 0:
        optimizer.step()
    return loss


def step_loss_over_world(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """Divides the loss by the world size although DDP already averages the gradients."""
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y) / dist.get_world_size()  # noqa: TRN715 - the mistake TRN702 must catch
    loss.backward()
    optimizer.step()
    return loss


def step_grads_scaled_per_rank(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """Edits gradients per rank after the all-reduce (a rank-dependent rescale)."""
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(1.0 + dist.get_rank())
    optimizer.step()
    return loss


def step_accumulating(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """Correct gradient accumulation over two micro-batches: no_sync() on the first backward only."""
    x, y = batch
    half = len(x) // 2
    optimizer.zero_grad()
    with model.no_sync():
        (loss_fn(model(x[:half]), y[:half]) * half / len(x)).backward()
    loss = loss_fn(model(x[half:]), y[half:]) * (len(x) - half) / len(x)
    loss.backward()
    optimizer.step()
    return loss


def ddp_without_buffer_broadcast() -> nn.Module:
    """A BatchNorm model the factory wraps itself, with broadcast_buffers=False: running stats drift."""
    with warnings.catch_warnings():  # torch >= 2.14 renames it forward_sync_buffers; older ones lack that
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(ex.MLP(batchnorm=True), broadcast_buffers=False)


def ddp_model() -> nn.Module:
    """A model the factory wraps itself, correctly."""
    return DistributedDataParallel(ex.MLP())


# -- loaders ------------------------------------------------------------------------------------------
def sharded_loader(epoch: int) -> DataLoader:
    """The correct per-rank training loader: DistributedSampler, set_epoch every epoch."""
    ds = dataset()
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    return DataLoader(ds, batch_size=4, sampler=sampler)


def unsharded_loader(epoch: int) -> DataLoader:
    """Every rank shuffles the whole dataset: no DistributedSampler."""
    return DataLoader(dataset(), batch_size=4, shuffle=True)


def loader_without_set_epoch(epoch: int) -> DataLoader:
    """A DistributedSampler whose epoch is never set: the same order every epoch."""
    ds = dataset()
    return DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, shuffle=True))


def loader_fixed_rank(epoch: int) -> DataLoader:
    """The sampler is told rank 0 on every rank: all ranks train on the same shard."""
    ds = dataset()
    sampler = DistributedSampler(ds, num_replicas=dist.get_world_size(), rank=0)
    sampler.set_epoch(epoch)
    return DataLoader(ds, batch_size=4, sampler=sampler)


def batches_by_stride(epoch: int) -> list:
    """A plain list of batches, sharded by striding over the dataset (no DataLoader at all)."""
    x, y = dataset().tensors
    g = torch.Generator().manual_seed(epoch)
    order = torch.randperm(len(x), generator=g)[dist.get_rank()::dist.get_world_size()]
    return [(x[order[i:i + 4]], y[order[i:i + 4]]) for i in range(0, len(order), 4)]


class StridedSampler(Sampler):
    """Shards without padding: rank r takes indices r, r + world, ... (uneven shards, no duplicates)."""

    def __init__(self, n: int) -> None:
        self.n, self.rank, self.world = n, dist.get_rank(), dist.get_world_size()

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def eval_loader_strided() -> DataLoader:
    """Each rank evaluates its own unpadded shard."""
    ds = dataset()
    return DataLoader(ds, batch_size=4, sampler=StridedSampler(len(ds)))


def eval_loader_padded() -> DataLoader:
    """A DistributedSampler for evaluation: pads the shards with repeated samples to equal length."""
    ds = dataset()
    return DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, shuffle=False))


def eval_loader_whole() -> DataLoader:
    """Every rank evaluates the whole set."""
    return DataLoader(dataset(), batch_size=4)


# -- evaluation ----------------------------------------------------------------------------------------
def _counts(model: nn.Module, loader: Any) -> torch.Tensor:
    model.eval()
    correct = total = 0.0
    with torch.no_grad():
        for x, y in loader:
            correct += float((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train()
    return torch.tensor([correct, total], dtype=torch.float64)


def evaluate_reduced(model: nn.Module, loader: Any) -> float:
    """Sum correct and seen counts over the ranks: right when the shards are not padded."""
    counts = _counts(model, loader)
    dist.all_reduce(counts)
    return float(counts[0] / counts[1])


def evaluate_local(model: nn.Module, loader: Any) -> float:
    """Reports this rank's shard only."""
    counts = _counts(model, loader)
    return float(counts[0] / counts[1])


# -- checkpoints ---------------------------------------------------------------------------------------
def save_on_rank_zero(model: nn.Module, optimizer: Any, path: str) -> None:
    """Rank 0 saves the unwrapped model; every rank waits for the file."""
    if dist.get_rank() == 0:
        torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}, path)
    dist.barrier()


def load_unwrapped(model: nn.Module, optimizer: Any, path: str) -> None:
    """Load into the unwrapped model, onto the CPU first."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    unwrap(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])


def save_on_every_rank(model: nn.Module, optimizer: Any, path: str) -> None:
    """Every rank writes the same file."""
    torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}, path)
    dist.barrier()


def save_per_rank_path(model: nn.Module, optimizer: Any, path: str) -> None:
    """Every rank writes its own file (a sharded checkpoint)."""
    torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()},
               f"{path}.rank{dist.get_rank()}")
    dist.barrier()


def load_per_rank_path(model: nn.Module, optimizer: Any, path: str) -> None:
    """Load this rank's own file."""
    load_unwrapped(model, optimizer, f"{path}.rank{dist.get_rank()}")


def save_wrapped(model: nn.Module, optimizer: Any, path: str) -> None:
    """Saves the DDP wrapper's state_dict: every key starts with `module.`."""
    if dist.get_rank() == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    dist.barrier()


def load_as_given(model: nn.Module, optimizer: Any, path: str) -> None:
    """Loads into whatever model it is given, keys unchanged."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])


def load_stripping_prefix(model: nn.Module, optimizer: Any, path: str) -> None:
    """Loads a wrapped or unwrapped checkpoint into the unwrapped model by dropping `module.`."""
    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    consume_prefix_in_state_dict_if_present(checkpoint["model"], "module.")
    unwrap(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])


# -- dict batches ----------------------------------------------------------------------------------------
class KeywordMLP(ex.MLP):
    """The MLP called with a keyword, as models fed dict batches are."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(features)


def dict_step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """The reference step on a dict batch."""
    optimizer.zero_grad()
    loss = loss_fn(model(features=batch["features"]), batch["label"])
    loss.backward()
    optimizer.step()
    return loss


def dict_step_loss_over_world(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """The dict-batch step dividing its loss by the world size under DDP."""
    optimizer.zero_grad()
    loss = loss_fn(model(features=batch["features"]), batch["label"]) / dist.get_world_size()  # noqa: TRN715
    loss.backward()
    optimizer.step()
    return loss


def dict_setup(world_size: int = 2, **overrides: Any) -> Training:
    """A correct setup whose batches are dicts (`{"features": x, "label": y}`)."""
    x, y = ex.blobs()
    fields: dict[str, Any] = dict(model=KeywordMLP, data=[{"features": x, "label": y}], step=dict_step,
                                  inputs="features", targets="label")
    fields.update(overrides)
    return setup(world_size, **fields)

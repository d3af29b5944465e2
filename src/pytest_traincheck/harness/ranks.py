"""What a distributed check sees inside each rank, and the `DistributedCheck` base class.

A distributed check has three parts: `on_rank` runs in every rank at once (collectives
allowed) and returns picklable evidence; `reference` runs afterwards in rank 0 alone,
inside a process group of world size 1, so the user's code computes the single-process
answer with the same calls (`dist.get_world_size()` is then 1); `conclude` compares
them in rank 0 and returns the verdict that the parent reports.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness, SetupData, call_user, isolated
from pytest_traincheck.harness.lightning import is_lightning
from pytest_traincheck.harness.session import _textbook
from pytest_traincheck.harness.spec import SetupError

__all__ = ["DistributedCheck", "Rank", "first_difference", "once_loader", "run_rank", "state", "sync_buffers", "unwrap"]

NOT_DISTRIBUTED = ("single-process setup: declare `Training(world_size=2, ...)` or run with "
                   "--train-sanity-world-size 2 to check it on several ranks")


def unwrap(model: nn.Module) -> nn.Module:
    """Return the module inside a DistributedDataParallel wrapper (or the model itself).

    A dict or list of models (a GAN) whose models are wrapped one by one gives the same
    container over the plain models, so state_dict keys match a single-process model's.
    """
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module
    if isinstance(model, nn.ModuleDict) and any(isinstance(m, DistributedDataParallel) for m in model.values()):
        return nn.ModuleDict({k: unwrap(m) for k, m in model.items()})
    if isinstance(model, nn.ModuleList) and any(isinstance(m, DistributedDataParallel) for m in model):
        return nn.ModuleList([unwrap(m) for m in model])
    return model


class Rank:
    """One rank's handle: its number, the harness, the fixed batch's shard and the collectives."""

    def __init__(self, h: Harness, rank: int, world: int, backend: str, tmp: str,
                 report: Callable[[str], None]) -> None:
        self.h, self.rank, self.world, self.backend, self.tmp = h, rank, world, backend, tmp
        self._report = report
        self._schedulers: list[tuple[Any, Any]] = []  # (optimizer, its schedulers) built by `fresh`
        self.calls = 0  # user step calls so far on this rank (`step_index`)

    @property
    def training(self) -> Any:
        """The user's `Training`."""
        return self.h.training

    def where(self, what: str) -> None:
        """Tell the parent what this rank is running (named if it hangs or dies there)."""
        self.h.clock.where = what
        self._report(what)

    # -- collectives --------------------------------------------------------------------------
    def gather(self, obj: Any) -> list[Any]:
        """Return every rank's ``obj`` (in rank order) on every rank."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        import torch.distributed as dist

        dist.barrier()

    # -- objects ------------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """Wrap ``model`` in DistributedDataParallel unless the user's factory already did."""
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(model, nn.ModuleDict):  # several models (a GAN): each gets its own DDP, as scripts do
            return nn.ModuleDict({k: self.wrap(m) for k, m in model.items()})
        if isinstance(model, nn.ModuleList):
            return nn.ModuleList([self.wrap(m) for m in model])
        if isinstance(model, DistributedDataParallel) or not any(p.requires_grad for p in model.parameters()):
            return model
        ids = [self.h.device.index] if self.h.device.type == "cuda" and self.backend == "nccl" else None
        return DistributedDataParallel(model, device_ids=ids)

    def fresh(self, wrap: bool = True) -> tuple[nn.Module, Any]:
        """Build a fresh model (DDP-wrapped unless ``wrap`` is False) and its optimizer."""
        self.where("the `model` factory")
        model = self.h.model()
        model = self.wrap(model) if wrap else unwrap(model)
        self.where("the `optimizer` factory")
        optimizer = self.h.optimizer(unwrap(model))  # factories that pick a part (`m.head`) see the plain model
        self.where("the `scheduler` factory")
        self._schedulers.append((optimizer, self.h.scheduler(optimizer)))
        return model, optimizer

    def shard(self, batch: Any = None) -> Any:
        """Return this rank's equal slice of the fixed batch (or of ``batch``), on the device."""
        batch = self.h.batch() if batch is None else batch
        per = self._per_rank(batch, self.world)
        return _rows(batch, self.rank * per, (self.rank + 1) * per, tb.batch_size(batch))

    def whole(self, world: int, batch: Any = None) -> Any:
        """Return the concatenation of the ``world`` ranks' shards (the fixed batch, cut to a multiple)."""
        batch = self.h.batch() if batch is None else batch
        return _rows(batch, 0, self._per_rank(batch, world) * world, tb.batch_size(batch))

    @staticmethod
    def _per_rank(batch: Any, world: int) -> int:
        samples = tb.batch_size(batch) or 0
        if samples < world:
            raise SetupError(f"the fixed batch has {samples} samples, fewer than the {world} ranks: "
                             "raise `batch_size` (or the data's batch size)")
        return samples // world

    def step(self, model: nn.Module, optimizer: Any, batch: Any) -> None:
        """Run one optimizer update of the user's code on ``batch``: `accumulate` step calls, or train_epoch over them.

        A step or train_epoch that takes ``scheduler`` gets the schedulers built with ``optimizer``,
        one that takes ``step_index`` the call's index on this rank, as in the single-process checks.
        """
        t = self.training
        self.where("the training step")
        if t.train_epoch is not None:
            extra = self._extra(t.train_epoch, optimizer)
            call_user("the `train_epoch` function", functools.partial(t.train_epoch, **extra),
                      model, once_loader(batch, t.accumulate), optimizer, t.loss_fn)
            self.calls += t.accumulate
            return
        fn, where = (t.step, "the `step` function") if t.step is not None else (_textbook(self.h), "the textbook step")
        for _ in range(t.accumulate):
            extra = self._extra(fn, optimizer)
            self.calls += 1
            call_user(where, functools.partial(fn, **extra), model, batch, optimizer, t.loss_fn)

    def _extra(self, fn: Callable[..., Any], optimizer: Any) -> dict[str, Any]:
        from pytest_traincheck.harness.session import accepts

        extra: dict[str, Any] = {}
        scheduler = next((s for o, s in self._schedulers if o is optimizer), None)
        if scheduler is not None and accepts(fn, "scheduler"):
            extra["scheduler"] = scheduler
        if accepts(fn, "step_index"):
            extra["step_index"] = self.calls
        return extra

    def path(self, name: str) -> str:
        """Return a path in the directory every rank shares."""
        return os.path.join(self.tmp, name)


def sync_buffers(model: nn.Module, h: Harness, batch: Any) -> None:
    """Let DDP broadcast rank 0's buffers, as it does at the start of every training forward.

    Buffers such as BatchNorm's running statistics legitimately differ right after a step
    (each rank updated them from its own shard); DDP overwrites them with rank 0's at the
    next forward. One forward in eval mode (statistics frozen) with gradients on triggers
    that broadcast without changing anything else.
    """
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, (nn.ModuleDict, nn.ModuleList)):  # models only the step knows how to call (a GAN)
        _broadcast_buffers(model)
        return
    if not isinstance(model, DistributedDataParallel) or not getattr(model, "broadcast_buffers", True):
        return
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.enable_grad():
            h.forward(model, batch)
    finally:
        for m, mode in modes.items():
            m.training = mode


def _broadcast_buffers(models: nn.Module) -> None:
    """Copy rank 0's buffers to every rank for each DDP model of a container, as its next forward would."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    for m in models.children():
        if isinstance(m, DistributedDataParallel) and getattr(m, "broadcast_buffers", True):
            for buffer in m.module.buffers():
                dist.broadcast(buffer.data, 0)


def _rows(batch: Any, start: int, stop: int, samples: Optional[int]) -> Any:
    """Slice every per-sample tensor of ``batch`` (first dimension ``samples``) to rows [start, stop)."""
    return tb.tree_map(lambda t: t[start:stop] if t.ndim >= 1 and t.shape[0] == samples else t, batch)


def once_loader(batch: Any, times: int = 1) -> DataLoader:
    """A loader yielding ``batch`` ``times`` times, shaped as given (for `train_epoch`)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
        if times == 1:
            return DataLoader(TensorDataset(*batch), batch_size=len(batch[0]))
        return DataLoader(TensorDataset(*batch), batch_sampler=[list(range(len(batch[0])))] * times)
    return DataLoader([batch] * times, batch_size=None)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the unwrapped model's state (parameters and buffers) as CPU tensors."""
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items() if isinstance(v, torch.Tensor)}


def first_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                     tolerance: float = 1e-6) -> Optional[tuple[str, float]]:
    """Return the first entry of ``a`` that ``b`` lacks or holds differently, with the max abs difference."""
    for name, value in a.items():
        other = b.get(name)
        if other is None or other.shape != value.shape:
            return name, float("inf")
        if not value.numel():
            continue
        if not value.is_floating_point():
            if not torch.equal(value, other):
                return name, float((value.double() - other.double()).abs().max())
            continue
        diff = float((value.double() - other.double()).abs().max())
        scale = max(1.0, float(value.double().abs().max()))
        if not diff <= tolerance * scale:  # NaN counts as a difference
            return name, diff
    return None


class DistributedCheck(Check):
    """A check run on every rank of a distributed setup; SKIP for single-process setups."""

    NEEDS_RANK_DATA: ClassVar[bool] = False  # skip unless `rank_data` is declared
    NEEDS_CHECKPOINT: ClassVar[bool] = False  # skip unless save/load_checkpoint are declared
    MIN_WORLD: ClassVar[int] = 2

    def run(self, h: Harness) -> CheckResult:
        """Launch the ranks (or skip) and return rank 0's verdict."""
        from pytest_traincheck.harness.distributed import effective_world_size, launch

        if effective_world_size(h.training) < self.MIN_WORLD:
            return self.skipped(NOT_DISTRIBUTED)
        if is_lightning(h.training):
            return self.skipped("Training.from_lightning runs the module without a Trainer, so without Lightning's "
                                "DDP strategy: the distributed checks need a plain `step` (declare the module's "
                                "model, optimizer and step with `Training(...)` to check it on several ranks)")
        if self.NEEDS_RANK_DATA and h.training.rank_data is None:
            return self.skipped("needs the per-rank training loader: declare `rank_data=lambda epoch: loader` "
                                "(built inside each rank, e.g. with a DistributedSampler)")
        if self.NEEDS_CHECKPOINT and h.training.save_checkpoint is None:
            return self.skipped("needs the user's checkpoint code: declare `save_checkpoint` and `load_checkpoint`")
        return launch(self, h)

    def on_rank(self, r: Rank) -> Any:
        """Run in every rank at once; return picklable evidence."""
        raise NotImplementedError

    def reference(self, r: Rank, evidence: list[Any]) -> Any:
        """Run in rank 0 alone (world size 1) after `on_rank`; return the single-process answer."""
        return None

    def conclude(self, evidence: list[Any], reference: Any, world: int) -> CheckResult:
        """Turn every rank's evidence (and the reference) into the verdict."""
        raise NotImplementedError

    @classmethod
    def has_reference(cls) -> bool:
        """True when the check overrides `reference`."""
        return cls.reference is not DistributedCheck.reference


def run_rank(check: DistributedCheck, rank: int, world: int, tmp: str, data: SetupData, seed: int, device: str,
             budget: float, backend: str, report: Callable[[str], None]) -> Optional[CheckResult]:
    """Run ``check`` in this rank; return the verdict on rank 0 (None elsewhere)."""
    from pytest_traincheck.harness.distributed import process_group

    if backend == "nccl":
        device = f"cuda:{rank}"
        torch.cuda.set_device(rank)
    store = os.path.join(tmp, "store")
    report("joining the process group")
    with process_group(backend, store, rank, world, budget):
        with isolated(seed):
            r = Rank(Harness(data, seed=seed, device=device, budget=budget), rank, world, backend, tmp, report)
            evidence = check.on_rank(r)
            r.where("gathering the evidence on rank 0")
            gathered = r.gather(evidence)
            r.barrier()
    if rank != 0:
        return None
    reference = None
    if check.has_reference():
        with process_group(backend, store + "-single", 0, 1, budget), isolated(seed):
            single = Rank(Harness(data, seed=seed, device=device, budget=budget), 0, 1, backend, tmp, report)
            single.where("the single-process reference")
            reference = check.reference(single, gathered)
    report("concluding on rank 0")
    return check.conclude(gathered, reference, world)

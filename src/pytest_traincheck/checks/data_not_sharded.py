"""TRN703: the ranks' training shards overlap, miss samples, or repeat their order every epoch."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, IterableDataset

from pytest_traincheck.harness import ddp_examples as dx
from pytest_traincheck.harness.check import CheckResult, Verdict
from pytest_traincheck.harness.core import call_user
from pytest_traincheck.harness.ranks import DistributedCheck, Rank

EPOCHS = (0, 1)


class DataNotSharded(DistributedCheck):
    """Fail when the ranks' loaders overlap or miss samples, or replay one order every epoch.

    ## What it measures
    Every rank calls `rank_data(epoch)` for two epochs and lists the samples it would train on:
    dataset indices read from the DataLoader's sampler (no data is loaded), or, for other iterables,
    a hash of each input. Rank 0 checks the shards are disjoint (beyond the few duplicates a
    DistributedSampler pads with), cover the dataset, and come in a different order in the second
    epoch.

    ## Why it matters
    Without a `DistributedSampler` every rank trains on the whole dataset (N times the work for the
    same result), and without `sampler.set_epoch(epoch)` every epoch replays the same order.

    ## Thresholds
    Fails on overlapping shards (beyond the few duplicates a DistributedSampler pads with), missing
    samples, or an identical order in both epochs. Fixed; turn the check off with
    `--train-sanity-ignore TRN703` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Runs only for a setup declared with `world_size=N` (N > 1), on N local processes with the gloo
    backend; skipped otherwise. Needs `rank_data=` (a function of the epoch returning each rank's
    loader); skipped otherwise.

    ## Example
    ```python
    def rank_data(epoch):
        return DataLoader(train_set, batch_size=32, shuffle=True)   # no DistributedSampler
    ```
    """

    CODE = "TRN703"
    NEEDS_RANK_DATA = True
    PASSING = (lambda: dx.setup(rank_data=dx.sharded_loader), lambda: dx.setup(3, rank_data=dx.sharded_loader),
               lambda: dx.setup(3, rank_data=dx.batches_by_stride))
    FAILING = (lambda: dx.setup(rank_data=dx.unsharded_loader),
               lambda: dx.setup(3, rank_data=dx.loader_fixed_rank),
               lambda: dx.setup(rank_data=dx.loader_without_set_epoch))

    def on_rank(self, r: Rank) -> Any:
        epochs = []
        for epoch in EPOCHS:
            r.where(f"`rank_data({epoch})`")
            loader = call_user(f"`rank_data({epoch})`", r.training.rank_data, epoch)
            r.where(f"iterating `rank_data({epoch})`")
            epochs.append(_samples(loader))
        return epochs

    def conclude(self, evidence: list[Any], reference: Any, world: int) -> CheckResult:
        first = [ranks[0] for ranks in evidence]
        kind, size, shuffles, pad_ok, drop_ok = first[0]["kind"], first[0]["size"], first[0]["shuffle"], 0, 0
        seqs = [[e[i]["ids"] for e in evidence] for i in range(len(EPOCHS))]
        if size is not None:
            pad_ok = (-size) % world  # a DistributedSampler pads to a multiple of the world size
            drop_ok = (world * max(first[0]["batch"], 1) if first[0]["drop_last"]
                       else world - 1 if first[0]["sampler_drop"] else 0)
        shards = seqs[0]
        seen = [len(s) for s in shards]
        union = set().union(*map(set, shards))
        duplicates = sum(seen) - len(union)
        if duplicates > pad_ok:
            a, b, common = _overlap(shards)
            same = all(set(s) == set(shards[0]) for s in shards)
            what = ("every rank iterates the same samples" if same else f"ranks {a} and {b} share {common} samples")
            return self.failed(
                f"in epoch 0, {what}: {sum(seen)} samples drawn by {world} ranks, only {len(union)} distinct "
                f"({duplicates} duplicates, at most {pad_ok} expected from padding); each rank needs its own shard "
                "(DistributedSampler, with the real rank)", samples_drawn=sum(seen), distinct=len(union),
                duplicates=duplicates, identified_by=kind)
        if size is not None and size - len(union) > drop_ok:
            return self.failed(f"in epoch 0 the {world} ranks together drew {len(union)} of the {size} samples: "
                               f"{size - len(union)} are never trained on", distinct=len(union), dataset=size,
                               identified_by=kind)
        if all(len(s) > 1 for s in shards) and seqs[0] == seqs[1]:
            verdict = Verdict.FAIL if shuffles is not False else Verdict.WARN
            cause = ("the sampler shuffles with `seed + epoch` but its epoch is never set: call "
                     "`sampler.set_epoch(epoch)` at the start of each epoch" if shuffles else
                     "the loader does not shuffle" if shuffles is False else "the order does not depend on the epoch")
            return self.result(verdict, f"every rank drew its samples in the same order in epochs 0 and 1 "
                               f"({sum(seen)} samples over {world} ranks): {cause}", samples_drawn=sum(seen),
                               identified_by=kind)
        coverage = f" covering all {size}" if size is not None else ""
        return self.passed(f"{world} ranks drew disjoint shards{coverage} ({duplicates} padded duplicates) and "
                           "reshuffled for the next epoch", samples_drawn=sum(seen), distinct=len(union),
                           identified_by=kind)


def _samples(loader: Any) -> dict[str, Any]:
    """List what ``loader`` yields in one pass: sampler indices when it can, else hashes of the inputs."""
    if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
        source = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
        ids = [int(i) for item in source for i in (item if isinstance(item, (list, tuple)) else [item])]
        sampler = loader.sampler
        return {"kind": "index", "ids": ids, "size": _len(loader.dataset), "shuffle": _shuffles(sampler),
                "batch": loader.batch_size or 1, "drop_last": bool(loader.drop_last),
                "sampler_drop": bool(getattr(sampler, "drop_last", False))}
    ids = []
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`rank_data` yields {type(x).__name__} inputs; traincheck needs tensors or a DataLoader")
        ids.extend(hashlib.sha1(row.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16] for row in x)
    return {"kind": "content", "ids": ids, "size": None, "shuffle": None, "batch": 1, "drop_last": False,
            "sampler_drop": False}


def _len(dataset: Any) -> Optional[int]:
    try:
        return len(dataset)
    except TypeError:
        return None


def _shuffles(sampler: Any) -> Optional[bool]:
    from torch.utils.data import RandomSampler, SequentialSampler

    if isinstance(sampler, RandomSampler):
        return True
    if isinstance(sampler, SequentialSampler):
        return False
    value = getattr(sampler, "shuffle", None)
    return value if isinstance(value, bool) else None


def _overlap(shards: list[list[Any]]) -> tuple[int, int, int]:
    best = (0, 1, -1)
    for a in range(len(shards)):
        for b in range(a + 1, len(shards)):
            common = len(set(shards[a]) & set(shards[b]))
            if common > best[2]:
                best = (a, b, common)
    return best

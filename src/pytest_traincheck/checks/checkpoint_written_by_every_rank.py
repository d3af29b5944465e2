"""TRN705: several ranks write the same checkpoint file."""

from __future__ import annotations

import os
from typing import Any

import torch

from pytest_traincheck.harness import ddp_examples as dx
from pytest_traincheck.harness.check import CheckResult
from pytest_traincheck.harness.core import call_user
from pytest_traincheck.harness.ranks import DistributedCheck, Rank


class CheckpointWrittenByEveryRank(DistributedCheck):
    """Fail when more than one rank writes the same file through the declared `save_checkpoint`.

    ## What it measures
    After one step, every rank calls `save_checkpoint(model, optimizer, path)` with the same path,
    as a training script does; each rank records the files its `torch.save` calls write. Writing
    from rank 0 only, or one file per rank, passes.

    ## Why it matters
    Every rank writing the same file races: the file can be truncated or mixed, and on shared
    storage the job slows down N-fold for nothing.

    ## Thresholds
    Fails when two ranks write the same path. Fixed; turn the check off with `--train-sanity-ignore
    TRN705` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Runs only for a setup declared with `world_size=N` (N > 1), on N local processes with the gloo
    backend; skipped otherwise. Needs `save_checkpoint=` and `load_checkpoint=`; skipped otherwise.
    Only writes through `torch.save` to a path are seen.

    ## Example
    ```python
    def save_checkpoint(model, optimizer, path):
        torch.save(model.state_dict(), path)   # on every rank
    ```
    """

    CODE = "TRN705"
    NEEDS_CHECKPOINT = True
    PASSING = (lambda: dx.setup(save_checkpoint=dx.save_on_rank_zero, load_checkpoint=dx.load_unwrapped),
               lambda: dx.setup(3, save_checkpoint=dx.save_per_rank_path, load_checkpoint=dx.load_per_rank_path))
    FAILING = (lambda: dx.setup(save_checkpoint=dx.save_on_every_rank, load_checkpoint=dx.load_unwrapped),
               lambda: dx.setup(3, save_checkpoint=dx.save_on_every_rank, load_checkpoint=dx.load_unwrapped))

    def on_rank(self, r: Rank) -> Any:
        model, optimizer = r.fresh()
        r.step(model, optimizer, r.shard())
        written: list[str] = []
        original = torch.save

        def recording_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(f, (str, os.PathLike)):
                written.append(os.path.realpath(os.fspath(f)))
            return original(obj, f, *args, **kwargs)

        torch.save = recording_save  # this rank is its own process: nothing else sees the patch
        try:
            r.where("the `save_checkpoint` function")
            call_user("the `save_checkpoint` function", r.training.save_checkpoint, model, optimizer,
                      r.path("checkpoint.pt"))
        finally:
            torch.save = original
        return written

    def conclude(self, evidence: list[Any], reference: Any, world: int) -> CheckResult:
        writers: dict[str, list[int]] = {}
        for rank, paths in enumerate(evidence):
            for path in dict.fromkeys(paths):
                writers.setdefault(path, []).append(rank)
        shared = {p: ranks for p, ranks in writers.items() if len(ranks) > 1}
        if shared:
            path, ranks = next(iter(shared.items()))
            return self.failed(f"{len(ranks)} of {world} ranks (ranks {', '.join(map(str, ranks))}) wrote the same "
                               f"checkpoint file `{os.path.basename(path)}`: concurrent writes can leave a corrupt or "
                               "mixed file; save on rank 0 only", writers=len(ranks), files=len(writers))
        if not writers:
            return self.passed(f"no rank of {world} wrote through `torch.save` (the writers cannot be told apart)",
                               writers=0)
        return self.passed(f"{len(writers)} checkpoint file(s), each written by one rank of {world}",
                           files=len(writers))

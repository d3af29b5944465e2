"""TRN704: the distributed evaluation reports one rank's shard, or counts padded duplicates."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from pytest_traincheck.harness import ddp_examples as dx
from pytest_traincheck.harness.check import CheckResult
from pytest_traincheck.harness.core import call_user
from pytest_traincheck.harness.ranks import DistributedCheck, Rank, once_loader, state, unwrap
from pytest_traincheck.harness.spec import SetupError

TOLERANCE = 1e-4  # relative


class EvalNotReduced(DistributedCheck):
    """Fail when `evaluate` on rank 0 of N ranks returns another number than on one process over the whole set.

    ## What it measures
    Every rank runs the user's `evaluate(model, loader)` on the same weights with its own evaluation
    loader: `rank_eval_data()` when declared (the user's sampler, with its padding), else an equal
    shard of the fixed evaluation batch. Rank 0 then runs `evaluate` alone (world size 1) on the
    whole set, twice to be sure it is deterministic, and compares each number it returns with rank
    0's distributed result.

    ## Why it matters
    An evaluation that reports rank 0's shard only, or counts the samples a DistributedSampler pads
    with twice, prints a metric that depends on the number of GPUs and is not the one of the whole
    evaluation set.

    ## Thresholds
    Fails when a returned number differs from the single-process result by more than 1e-4
    (relative). Fixed; turn the check off with `--train-sanity-ignore TRN704` (or `ignore` in
    `[tool.traincheck.sanity]`).

    ## Known problems
    Runs only for a setup declared with `world_size=N` (N > 1), on N local processes with the gloo
    backend; skipped otherwise. Needs `evaluate=`; skipped otherwise. An `evaluate` that is not
    deterministic on one process is reported as such rather than judged.

    ## Example
    ```python
    def evaluate(model, loader):
        return correct / total   # no dist.all_reduce of correct and total
    ```
    """

    CODE = "TRN704"
    NEEDS_EVALUATE = True
    PASSING = (lambda: dx.setup(evaluate=dx.evaluate_reduced),
               lambda: dx.setup(3, evaluate=dx.evaluate_reduced, rank_eval_data=dx.eval_loader_strided),
               lambda: dx.setup(3, evaluate=dx.evaluate_local, rank_eval_data=dx.eval_loader_whole))
    FAILING = (lambda: dx.setup(evaluate=dx.evaluate_local),
               lambda: dx.setup(3, evaluate=dx.evaluate_local, rank_eval_data=dx.eval_loader_strided),
               lambda: dx.setup(3, evaluate=dx.evaluate_reduced, rank_eval_data=dx.eval_loader_padded))

    def on_rank(self, r: Rank) -> Any:
        model, _ = r.fresh()
        loader = self._loader(r)
        r.where("the `evaluate` function")
        numbers = _numbers(call_user("the `evaluate` function", r.training.evaluate, model, loader))
        return {"state": state(model), "numbers": numbers, "size": _size(loader)}

    def reference(self, r: Rank, evidence: list[Any]) -> Any:
        runs = []
        for _ in range(2):
            model, _ = r.fresh()
            unwrap(model).load_state_dict(evidence[0]["state"])
            loader = self._loader(r, world=len(evidence))
            r.where("the `evaluate` function")
            runs.append(_numbers(call_user("the `evaluate` function", r.training.evaluate, model, loader)))
        return runs

    def _loader(self, r: Rank, world: Optional[int] = None) -> Any:
        if r.training.rank_eval_data is not None:
            r.where("`rank_eval_data()`")
            return call_user("`rank_eval_data()`", r.training.rank_eval_data)
        batch = r.h.eval_batch()
        if world is not None:  # the single-process reference: every rank's shard together
            return once_loader(r.whole(world, batch))
        return once_loader(r.shard(batch))

    def conclude(self, evidence: list[Any], reference: Any, world: int) -> CheckResult:
        ref, again = reference
        if set(ref) != set(again) or any(not _close(ref[k], again[k]) for k in ref):
            return self.skipped("`evaluate` returns different numbers on two runs over the same weights and data; "
                                "call model.eval() and avoid randomness in it to let traincheck compare")
        mine = evidence[0]["numbers"]
        if set(mine) != set(ref):
            return self.failed(f"`evaluate` returned keys {sorted(mine)} on rank 0 of {world} but {sorted(ref)} on "
                               "one process", keys=len(mine))
        for key, value in mine.items():
            if _close(value, ref[key]):
                continue
            others = [ev["numbers"].get(key) for ev in evidence[1:]]
            local = all(o is not None and not _close(o, value) for o in others)
            cause = (f"each rank reports its own shard (rank 1 returned {others[0]:.6g}): reduce the sums and counts "
                     "across ranks with `dist.all_reduce`" if local else
                     "the ranks agree with each other but not with the whole set: padded duplicates from the "
                     "DistributedSampler are counted (or samples are missing); count `len(dataset)` samples")
            size = evidence[0]["size"]
            padded = (f"; the evaluation set has {size} samples, padded to {math.ceil(size / world) * world}"
                      if size and size % world and not local else "")
            label = "the result" if key == "value" else f"`{key}`"
            return self.failed(f"on rank 0 of {world}, {label} is {value:.6g}, but one process evaluating the whole "
                               f"set gets {ref[key]:.6g}: {cause}{padded}", distributed=value, single_process=ref[key],
                               key=key)
        return self.passed(f"rank 0's distributed evaluation matched the single-process evaluation of the whole set "
                           f"({len(mine)} number(s))", numbers=len(mine))


def _numbers(out: Any) -> dict[str, float]:
    """Flatten evaluate's result (a number, scalar tensor, dict or sequence of them) to named floats."""
    if isinstance(out, dict):
        items = list(out.items())
    elif isinstance(out, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(out)]
    else:
        items = [("value", out)]
    numbers = {}
    for key, value in items:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        numbers[str(key)] = float(value)
    if not numbers:
        raise SetupError(f"the `evaluate` function returned {type(out).__name__} with no numbers; return a metric "
                         "(a float, a scalar tensor, or a dict of them)")
    return numbers


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= TOLERANCE * max(abs(a), abs(b), 1e-8)


def _size(loader: Any) -> Optional[int]:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None

"""TRN702: one distributed step does not equal one single-process step over the concatenated shards."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import ddp_examples as dx
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import CheckResult
from pytest_traincheck.harness.ranks import DistributedCheck, Rank, state, unwrap

# The norm of the difference of the updates, relative to the single-process update's norm. Adam-like
# optimizers turn float noise in near-zero gradients into full-size per-element updates, so single
# elements may differ; the mistakes this catches move the whole update by a factor (1/N, N, per rank).
TOLERANCE = 1e-2


class DdpStepNotEquivalent(DistributedCheck):
    """Fail when a distributed step moves the parameters unlike a single-process step on the whole batch.

    ## What it measures
    Every rank runs the user's step once on its shard of the fixed batch; rank 0 then runs the same
    step alone (world size 1, same initial weights) on the concatenation of the shards, twice to be
    sure the step is deterministic. With equal shards and a mean-reduced loss, DDP's averaged
    gradients equal the whole-batch gradients, so each rank's update must match. Dropout layers are
    disabled in both runs.

    ## Why it matters
    A loss divided by the world size, gradients scaled per rank, or shards of different sizes make
    the distributed update differ from the single-process one: the effective learning rate changes
    with the number of GPUs.

    ## Thresholds
    Fails when an update differs by more than 1e-3, relative to the largest single-process update.
    Fixed; turn the check off with `--train-sanity-ignore TRN702` (or `ignore` in
    `[tool.traincheck.sanity]`).

    ## Known problems
    Runs only for a setup declared with `world_size=N` (N > 1), on N local processes with the gloo
    backend; skipped otherwise. Models with (non-synchronized) BatchNorm are not judged, since their
    statistics legitimately differ per shard.

    ## Example
    ```python
    loss = loss_fn(model(x), y) / dist.get_world_size()   # DDP already averages
    ```
    """

    CODE = "TRN702"
    PASSING = (lambda: dx.setup(), lambda: dx.setup(3),
               lambda: dx.setup(step=dx.step_accumulating),
               lambda: dx.setup(model=lambda: ex.MLP(dropout=0.3), optimizer=lambda p: torch.optim.SGD(
                   p, lr=0.1, momentum=0.9)),
               lambda: dx.setup(model=dx.ddp_model, step=None),
               lambda: dx.dict_setup(3))
    FAILING = (lambda: dx.setup(step=dx.step_loss_over_world),
               lambda: dx.dict_setup(step=dx.dict_step_loss_over_world),
               lambda: dx.setup(3, step=dx.step_loss_over_world),
               lambda: dx.setup(step=dx.step_never_syncing),
               lambda: dx.setup(step=dx.step_grads_scaled_per_rank))

    def on_rank(self, r: Rank) -> Any:
        model, optimizer = r.fresh()
        if _has_local_batchnorm(model):
            return None
        _disable_dropout(model)
        before = state(model)
        r.step(model, optimizer, r.shard())
        return {"before": before, "delta": _delta(before, state(model))}

    def reference(self, r: Rank, evidence: list[Any]) -> Any:
        if evidence[0] is None:
            return None
        runs = []
        for _ in range(2):
            model, optimizer = r.fresh()
            unwrap(model).load_state_dict(evidence[0]["before"])
            _disable_dropout(model)
            r.step(model, optimizer, r.whole(len(evidence)))
            runs.append(_delta(evidence[0]["before"], state(model)))
        return runs

    def conclude(self, evidence: list[Any], reference: Any, world: int) -> CheckResult:
        if reference is None:
            return self.skipped("the model has BatchNorm layers (not SyncBatchNorm): each rank normalises its own "
                                "shard, so a DDP step is not a whole-batch step by design; convert with "
                                "SyncBatchNorm to compare")
        ref, again = reference
        scale = max((float(v.abs().max()) for v in ref.values() if v.numel()), default=0.0)
        if scale == 0.0:
            return self.skipped("the single-process step does not move any parameter (see TRN602)")
        ref_norm = _norm(ref)
        noise = _norm(_minus(ref, again)) / ref_norm
        if noise > TOLERANCE:
            return self.skipped(f"the step is not deterministic (two single-process runs differ by {noise:.1%} of "
                                "the update), so its distributed update cannot be compared")
        for rank, ev in enumerate(evidence):
            delta = ev["delta"]
            off = _norm(_minus(ref, delta)) / ref_norm
            if off <= TOLERANCE:
                continue
            ratio = _norm(delta) / ref_norm
            name = _worst_param(ref, delta)
            return self.failed(
                f"one step on {world} ranks moved the parameters differently from one single-process step over "
                f"the {world} shards together: on rank {rank} the update differs by {off:.1%} of its norm (most "
                f"in `{name}`); the update is {ratio:.3g}x the single-process one"
                f"{_diagnosis(ratio, world, evidence)}", rank=rank, first_difference=name, relative_difference=off,
                update_ratio=ratio)
        return self.passed(f"one step on {world} ranks matched one single-process step over the concatenated "
                           f"shards on every rank (within {TOLERANCE:.0%} of the update's norm)", max_update=scale)


def _diagnosis(ratio: float, world: int, evidence: list[Any]) -> str:
    base = evidence[0]["delta"]
    if any(_norm(_minus(base, ev["delta"])) > TOLERANCE * _norm(base) for ev in evidence[1:]):
        return (": the ranks' updates differ from each other, so gradients were not all-reduced (`no_sync()` on "
                "the updating step) or were edited per rank after `backward()`")
    if abs(ratio * world - 1) < 0.05:
        return (f" = 1/{world}: the loss is divided by the world size on top of DDP's gradient averaging "
                "(or summed per shard with reduction='sum')")
    if abs(ratio / world - 1) < 0.05:
        return f" = {world}: the gradients are summed over the ranks instead of averaged"
    return ""


def _has_local_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
               for m in model.modules())


def _disable_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0  # applied functionally inside attention


def _delta(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: after[k].double() - v.double() for k, v in before.items() if v.is_floating_point() and k in after}


def _minus(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v - b[k] if k in b else v for k, v in a.items()}


def _norm(d: dict[str, torch.Tensor]) -> float:
    return max(float(sum(float(v.pow(2).sum()) for v in d.values())) ** 0.5, 1e-30)


def _worst_param(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str:
    diffs = {k: float((v - b[k]).norm()) for k, v in a.items() if v.numel() and k in b}
    return max(diffs, key=diffs.__getitem__) if diffs else "?"

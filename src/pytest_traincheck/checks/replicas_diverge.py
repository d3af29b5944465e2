"""TRN701: after a few distributed steps the ranks no longer hold the same model."""

from __future__ import annotations

from typing import Any

from pytest_traincheck.harness import ddp_examples as dx
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import CheckResult
from pytest_traincheck.harness.ranks import DistributedCheck, Rank, first_difference, state, sync_buffers

STEPS = 3


class ReplicasDiverge(DistributedCheck):
    """Fail when, after a few steps on every rank's shard, a parameter or buffer differs between ranks.

    ## What it measures
    Each rank builds the model (wrapped in DDP unless the factory did), runs the user's step on its
    own slice of the fixed batch three times, and sends its state to rank 0, which names the first
    parameter or buffer that differs and by how much.

    ## Why it matters
    DDP keeps replicas identical by all-reducing gradients and broadcasting buffers. A step under
    `no_sync()` that never syncs, a gradient edited on one rank, or a `step()` on rank 0 only lets
    the replicas drift apart: each rank trains its own model and the saved one is only rank 0's.

    ## Thresholds
    Fails on any difference in any parameter or buffer after 3 steps. Fixed; turn the check off with
    `--train-sanity-ignore TRN701` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Runs only for a setup declared with `world_size=N` (N > 1), on N local processes with the gloo
    backend; skipped otherwise. Buffers that are meant to differ per rank are reported too.

    ## Example
    ```python
    if dist.get_rank() == 0:
        optimizer.step()
    ```
    """

    CODE = "TRN701"
    PASSING = (lambda: dx.setup(), lambda: dx.setup(3),
               lambda: dx.setup(model=lambda: ex.MLP(batchnorm=True, dropout=0.2)),
               lambda: dx.setup(step=dx.step_accumulating, optimizer=ex.adam()),
               lambda: dx.setup(model=dx.ddp_model, step=None),
               lambda: dx.dict_setup(step=None))
    FAILING = (lambda: dx.setup(step=dx.step_never_syncing),
               lambda: dx.setup(3, step=dx.step_on_rank_zero_only),
               lambda: dx.setup(model=dx.ddp_without_buffer_broadcast),
               lambda: dx.setup(step=dx.step_grads_scaled_per_rank))

    def on_rank(self, r: Rank) -> Any:
        model, optimizer = r.fresh()
        batch = r.shard()
        for _ in range(STEPS):
            r.step(model, optimizer, batch)
        r.where("DDP's buffer broadcast")
        sync_buffers(model, r.h, batch)
        return state(model)

    def conclude(self, evidence: list[Any], reference: Any, world: int) -> CheckResult:
        base = evidence[0]
        for rank, other in enumerate(evidence[1:], 1):
            found = first_difference(base, other)
            if found is None:
                continue
            name, diff = found
            kind = "buffer" if _is_buffer(name) else "parameter"
            hint = ("buffers are not broadcast (`broadcast_buffers=False`) or are updated per rank"
                    if kind == "buffer" else
                    "its gradient was not all-reduced (a step under `no_sync()`), was edited per rank after "
                    "`backward()`, or `optimizer.step()` did not run on every rank")
            return self.failed(f"after {STEPS} steps on {world} ranks, {kind} `{name}` differs between rank 0 and "
                               f"rank {rank} by {diff:.3g} (max abs): {hint}", steps=STEPS, rank=rank,
                               first_difference=name, max_abs_diff=diff)
        return self.passed(f"after {STEPS} steps on {world} ranks, all {len(base)} parameters and buffers are "
                           "identical on every rank", steps=STEPS, entries=len(base))


def _is_buffer(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked") or "buffer" in name

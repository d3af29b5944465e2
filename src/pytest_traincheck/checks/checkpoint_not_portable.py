"""TRN706: a checkpoint saved from the DDP-wrapped model does not load into the plain model, or back."""

from __future__ import annotations

from typing import Any, Optional

from pytest_traincheck.harness import ddp_examples as dx
from pytest_traincheck.harness.check import CheckResult
from pytest_traincheck.harness.core import UserCodeError, call_user
from pytest_traincheck.harness.ranks import DistributedCheck, Rank, first_difference, state


class CheckpointNotPortable(DistributedCheck):
    """Fail when the declared save/load functions cannot move a model between DDP and a plain process.

    ## What it measures
    After one distributed step, the ranks save through `save_checkpoint` from the DDP-wrapped model.
    Rank 0 then, alone, loads that file with `load_checkpoint` into a fresh plain (unwrapped) model,
    as inference or fine-tuning code does, and compares every parameter and buffer; then it saves
    from the plain model and loads that into a fresh wrapped one.

    ## Why it matters
    A state dict saved from the DDP wrapper has every key prefixed with `module.`: it does not load
    into the plain model used for inference or fine-tuning, and a plain checkpoint does not load
    back into the wrapper.

    ## Thresholds
    Fails when loading raises or any parameter or buffer differs after loading. Fixed; Turn the
    check off with `--train-sanity-ignore TRN706` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Runs only for a setup declared with `world_size=N` (N > 1), on N local processes with the gloo
    backend; skipped otherwise. Needs `save_checkpoint=` and `load_checkpoint=`; skipped otherwise.

    ## Example
    ```python
    torch.save(ddp_model.state_dict(), path)   # keys start with "module."
    ```
    """

    CODE = "TRN706"
    NEEDS_CHECKPOINT = True
    PASSING = (lambda: dx.setup(save_checkpoint=dx.save_on_rank_zero, load_checkpoint=dx.load_unwrapped),
               lambda: dx.setup(3, save_checkpoint=dx.save_wrapped, load_checkpoint=dx.load_stripping_prefix))
    FAILING = (lambda: dx.setup(save_checkpoint=dx.save_wrapped, load_checkpoint=dx.load_as_given),
               lambda: dx.setup(3, save_checkpoint=dx.save_wrapped, load_checkpoint=dx.load_unwrapped))

    def on_rank(self, r: Rank) -> Any:
        model, optimizer = r.fresh()
        r.step(model, optimizer, r.shard())
        r.where("the `save_checkpoint` function")
        call_user("the `save_checkpoint` function", r.training.save_checkpoint, model, optimizer,
                  r.path("wrapped.pt"))
        return state(model) if r.rank == 0 else None

    def reference(self, r: Rank, evidence: list[Any]) -> Any:
        saved = evidence[0]
        plain, optimizer = r.fresh(wrap=False)
        problem = _load(r, plain, optimizer, "wrapped.pt", saved,
                        "saved from the DDP-wrapped model, loaded into a plain model")
        if problem is not None:
            return problem
        r.where("the `save_checkpoint` function")
        call_user("the `save_checkpoint` function", r.training.save_checkpoint, plain, optimizer, r.path("plain.pt"))
        wrapped, optimizer = r.fresh(wrap=True)
        return _load(r, wrapped, optimizer, "plain.pt", state(plain),
                     "saved from a plain model, loaded into the DDP-wrapped one")

    def conclude(self, evidence: list[Any], reference: Any, world: int) -> CheckResult:
        if reference is not None:
            direction, message, evidence_name, diff = reference
            return self.failed(f"a checkpoint ({world} ranks; {direction}) {message}", direction=direction,
                               first_difference=evidence_name, max_abs_diff=diff)
        return self.passed(f"a checkpoint saved on {world} ranks from the DDP-wrapped model loaded into a plain model "
                           "with every parameter and buffer equal, and back", entries=len(evidence[0]))


def _load(r: Rank, model: Any, optimizer: Any, name: str, expected: dict[str, Any],
          direction: str) -> Optional[tuple[str, str, str, float]]:
    r.where("the `load_checkpoint` function")
    try:
        call_user("the `load_checkpoint` function", r.training.load_checkpoint, model, optimizer, r.path(name))
    except UserCodeError as exc:
        text = " ".join(line.strip() for line in str(exc.original).splitlines())[:240]
        hint = ("; its keys carry DDP's `module.` prefix: save `model.module.state_dict()` or strip the prefix when "
                "loading" if "module." in str(exc.original) else "")
        return direction, f"fails to load: {type(exc.original).__name__}: {text}{hint}", "", float("nan")
    found = first_difference(expected, state(model))
    if found is None:
        return None
    entry, diff = found
    return direction, (f"loads with `{entry}` off by {diff:.3g} (max abs): the load does not restore the saved "
                       "weights (keys under another prefix are silently skipped with strict=False)"), entry, diff

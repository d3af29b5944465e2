"""TRN503: saving and loading a checkpoint does not reproduce the next training step."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import tempfile
from typing import Any, Iterator, Optional

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness, call_user, load_optimizer_state, named_optimizers, optimizer_state
from pytest_traincheck.harness.session import Session, accepts
from pytest_traincheck.harness.trace import Trace

STEPS = 3  # enough for Adam's moments and momentum buffers to hold real state
TOLERANCE = 1e-6  # max abs difference, relative to max(1, |value|)


def _save_full(model: nn.Module, optimizer: Any, path: str) -> None:
    torch.save({"model": model.state_dict(), "optimizer": optimizer_state(optimizer)}, path)


def _load_full(model: nn.Module, optimizer: Any, path: str) -> None:
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])


def _load_model_only(model: nn.Module, optimizer: Any, path: str) -> None:
    model.load_state_dict(torch.load(path, weights_only=True)["model"])


def _save_model_only(model: nn.Module, optimizer: Any, path: str) -> None:
    torch.save({"model": model.state_dict()}, path)


def _load_what_was_saved(model: nn.Module, optimizer: Any, path: str) -> None:
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    if "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])


def _sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.1)


def _scheduled(**overrides: Any) -> Any:
    """A warmup schedule advanced by the step after each optimizer step."""
    from pytest_traincheck.checks.scheduler_step_misordered import _step_then, _warmup

    return ex.setup(optimizer=_sgd, scheduler=_warmup, step=_step_then("optimizer first"), **overrides)


def _save_with_scheduler(model: nn.Module, optimizer: Any, path: str, scheduler: Any = None) -> None:
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, path)


def _load_with_scheduler(model: nn.Module, optimizer: Any, path: str, scheduler: Any = None) -> None:
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])


class CheckpointNotResumable(Check):
    """Fail when a run resumed from a checkpoint takes a different next step than the uninterrupted run.

    ## What it measures
    Trains 3 steps, saves through the declared `save_checkpoint`, loads into fresh objects through
    `load_checkpoint`, and compares the next step taken from the restored objects with the next step
    of the uninterrupted run.

    ## Why it matters
    A checkpoint without the optimizer state (Adam's moments, momentum buffers), the scheduler or
    the BatchNorm buffers resumes with a jump in the loss: long runs that are preempted train
    differently from what their logs say.

    ## Thresholds
    Fails when any parameter after the next step differs by more than 1e-6, relative to max(1,
    |value|). Fixed; turn the check off with `--train-sanity-ignore TRN503` (or `ignore` in
    `[tool.traincheck.sanity]`).

    ## Known problems
    Needs `save_checkpoint=` and `load_checkpoint=`; skipped otherwise. Randomness inside the step
    (dropout) is reseeded identically for both runs; other sources of non-determinism would be
    reported as a difference.

    ## Example
    ```python
    def save_checkpoint(model, optimizer, path):
        torch.save(model.state_dict(), path)   # the optimizer state is lost
    ```
    """

    CODE = "TRN503"
    PASSING = (lambda: ex.setup(),
               lambda: ex.setup(model=lambda: ex.MLP(dropout=0.3, batchnorm=True)),
               lambda: ex.setup(save_checkpoint=_save_full, load_checkpoint=_load_full),
               lambda: ex.setup(optimizer=_sgd, save_checkpoint=_save_full, load_checkpoint=_load_model_only),
               _scheduled, lambda: _scheduled(save_checkpoint=_save_with_scheduler,
                                              load_checkpoint=_load_with_scheduler))
    FAILING = (lambda: ex.setup(save_checkpoint=_save_full, load_checkpoint=_load_model_only),
               lambda: ex.setup(optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                                save_checkpoint=_save_model_only, load_checkpoint=_load_what_was_saved),
               lambda: _scheduled(save_checkpoint=_save_full, load_checkpoint=_load_full))

    def run(self, h: Harness) -> CheckResult:
        how = ("the declared save_checkpoint/load_checkpoint" if h.training.save_checkpoint is not None
               else "torch.save/torch.load of the model and optimizer state_dicts")
        with h.session() as original, tempfile.TemporaryDirectory(prefix="traincheck-") as tmp:
            original.train(STEPS)
            position = original.calls  # where a resumed loop continues (step_index, a Lightning epoch's end)
            path = os.path.join(tmp, "checkpoint.pt")
            self._save(h, original.model, original.optimizer, path, original.scheduler)
            model = h.model()
            optimizer = h.optimizer(model)
            scheduler = h.scheduler(optimizer)  # built before loading, as a resuming script does
            self._load(h, model, optimizer, path, scheduler)
            loaded = _first_difference(original.model, model)
            if loaded is not None:
                name, diff = loaded
                return self.failed(
                    f"after {STEPS} steps, a fresh model loaded from the checkpoint ({how}) differs from the saved "
                    f"one: `{name}` by {diff:.3g} (max abs): the checkpoint does not restore the model; save and "
                    "load `model.state_dict()`", steps=STEPS, first_difference=name, max_abs_diff=diff)
            kept, restored = _state_entries(original.optimizer), _state_entries(optimizer)
            state = _rng_state()
            original.step()
            carried = len(original.trace.stale)  # backward() added to gradients left by the previous step
        with _session(h, model, optimizer, scheduler) as resumed:
            resumed.calls = position
            _set_rng_state(state)
            resumed.step()
        stepped = _first_difference(original.model, model)
        if stepped is not None:
            name, diff = stepped
            lr_now, lr_resumed = _lrs(original.optimizer), _lrs(optimizer)
            cause = ("the optimizer state (Adam moments, momentum) is not restored; save and load "
                     "`optimizer.state_dict()` too" if restored < kept else
                     f"the learning rate differs after resuming ({lr_now} uninterrupted, {lr_resumed} resumed): the "
                     "scheduler's state is not restored; save and load `scheduler.state_dict()` too"
                     if lr_now != lr_resumed else
                     f"the uninterrupted run's step added to gradients carried in `.grad` from the previous step "
                     f"({carried} parameter(s); no `zero_grad()`, see TRN101), which no checkpoint holds; clear "
                     "the gradients every step" if carried else
                     "some training state is not in the checkpoint (optimizer state, a scheduler, a tensor attribute "
                     "that is not a registered buffer); save and load every state_dict")
            return self.failed(
                f"resumed after {STEPS} steps ({how}), one more step on the same batch and RNG state moved `{name}` "
                f"differently from the uninterrupted run (max abs diff {diff:.3g}; all parameters matched right "
                f"after loading; optimizer state tensors: {kept} uninterrupted, {restored} resumed): {cause}",
                steps=STEPS, first_difference=name, max_abs_diff=diff, optimizer_state=kept,
                resumed_optimizer_state=restored, carried_gradients=carried)
        lr_now, lr_resumed = _lrs(original.optimizer), _lrs(optimizer)
        if lr_now != lr_resumed:
            return self.failed(
                f"resumed after {STEPS} steps ({how}), the next step matched but then the learning rate differs "
                f"({lr_now} uninterrupted, {lr_resumed} resumed): the scheduler's position is not restored, so "
                "every later step uses a different learning rate; save and load `scheduler.state_dict()` too",
                steps=STEPS, lr=lr_now[0], resumed_lr=lr_resumed[0])
        return self.passed(f"resumed after {STEPS} steps ({how}), the next step matched the uninterrupted run "
                           "for every parameter and buffer", steps=STEPS, optimizer_state=kept)

    def _save(self, h: Harness, model: nn.Module, optimizer: Any, path: str, scheduler: Any) -> None:
        save = h.training.save_checkpoint
        if save is None:
            _save_full(model, optimizer, path)
            if scheduler is not None:  # the scheduler's position travels in the default checkpoint too
                extra = torch.load(path, weights_only=True)
                extra["scheduler"] = optimizer_state(scheduler)
                torch.save(extra, path)
        else:
            kw = {"scheduler": scheduler} if scheduler is not None and accepts(save, "scheduler") else {}
            call_user("the `save_checkpoint` function", functools.partial(save, **kw) if kw else save,
                      model, optimizer, path)

    def _load(self, h: Harness, model: nn.Module, optimizer: Any, path: str, scheduler: Any) -> None:
        load = h.training.load_checkpoint
        if load is None:
            checkpoint = torch.load(path, weights_only=True, map_location=h.device)
            model.load_state_dict(checkpoint["model"])
            load_optimizer_state(optimizer, checkpoint["optimizer"])
            if scheduler is not None:
                load_optimizer_state(scheduler, checkpoint["scheduler"])
        else:
            kw = {"scheduler": scheduler} if scheduler is not None and accepts(load, "scheduler") else {}
            call_user("the `load_checkpoint` function", functools.partial(load, **kw) if kw else load,
                      model, optimizer, path)


@contextlib.contextmanager
def _session(h: Harness, model: nn.Module, optimizer: Any, scheduler: Any = None) -> Iterator[Session]:
    """Run the user's step on given objects, instrumented like `Harness.session`."""
    traces = {name: Trace(model, opt, h.clock.check) for name, opt in named_optimizers(optimizer).items()}
    try:
        session = Session(h, model, optimizer, traces)
        session.scheduler = scheduler
        yield session
    finally:
        for trace in reversed(list(traces.values())):
            trace.close()


def _first_difference(a: nn.Module, b: nn.Module) -> Optional[tuple[str, float]]:
    """Return the first floating state entry (parameter or buffer) that differs, with its max abs diff."""
    other = b.state_dict()
    for name, value in a.state_dict().items():
        mine = other.get(name)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        if mine is None or mine.shape != value.shape:
            return name, float("inf")
        diff = float((value.detach() - mine.detach()).abs().max()) if value.numel() else 0.0
        scale = max(1.0, float(value.detach().abs().max())) if value.numel() else 1.0
        if not diff <= TOLERANCE * scale:  # NaN counts as a difference
            return name, diff
    return None


def _lrs(optimizer: Any) -> list[float]:
    return [round(float(g["lr"]), 12) for opt in named_optimizers(optimizer).values() for g in opt.param_groups]


def _state_entries(optimizer: Any) -> int:
    return sum(len(v) for opt in named_optimizers(optimizer).values() for v in opt.state.values()
               if isinstance(v, dict))


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        state["numpy"] = numpy.random.get_state()
    except ImportError:  # pragma: no cover - numpy is optional
        pass
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    # The same dropout masks and sampling on both runs: only the restored state may differ.
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])

"""TRN108: the LR scheduler is stepped before the optimizer, or never, by the step that is given it."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness, call_user, named_optimizers
from pytest_traincheck.harness.lightning import is_lightning

STEPS = 3


def _warmup(optimizer: Any) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / 4))


def _step_then(order: str) -> Callable[..., Any]:
    def step(model: Any, batch: Any, optimizer: Any, loss_fn: Any, scheduler: Any = None) -> Any:
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if order == "scheduler first":
            scheduler.step()
        optimizer.step()
        if order == "optimizer first":
            scheduler.step()
        return loss
    return step


def _held(holder: dict[str, Any]) -> Callable[..., Any]:
    """Return the factory that keeps the scheduler where the step finds it (a closure, `self.scheduler`)."""
    def make(optimizer: Any) -> Any:
        holder["scheduler"] = _warmup(optimizer)
        return holder["scheduler"]
    return make


def _closure(order: str) -> Any:
    """A setup whose step reads the scheduler from a closure instead of a `scheduler` parameter."""
    holder: dict[str, Any] = {}
    inner = _step_then(order)

    def step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        return inner(model, batch, optimizer, loss_fn, holder["scheduler"])
    return ex.setup(step=step, scheduler=_held(holder))


def _epoch_then(order: str) -> Callable[..., Any]:
    def train_epoch(model: Any, loader: Any, optimizer: Any, loss_fn: Any, scheduler: Any) -> None:
        if order == "scheduler first":
            scheduler.step()
        for batch in loader:
            ex.good_step(model, batch, optimizer, loss_fn)
        if order == "optimizer first":
            scheduler.step()  # once per epoch, after its optimizer steps
    return train_epoch


class SchedulerStepMisordered(Check):
    """Fail when the training code advances a scheduler before its optimizer.step(), or never advances it.

    ## What it measures
    Builds the declared `scheduler` over a fresh optimizer and records the order of each
    scheduler's `step()` and its optimizer's `step()` over three calls of the step (or one
    `train_epoch` call over three batches). The scheduler is watched wherever the code reaches it:
    a `scheduler` parameter, a closure or an attribute (`self.scheduler`). For
    `Training.from_lightning`, Lightning's own scheduling runs too: "step"-interval schedulers after
    each optimizer step, then an epoch end (`on_train_epoch_end`, "epoch"-interval schedulers).

    ## Why it matters
    A scheduler stepped before the first optimizer step skips the first value of its schedule (the
    warmup starts one position late, a step decay comes early); a scheduler handed to the step but
    never stepped leaves the learning rate at its initial value for the whole run. In a
    LightningModule with automatic optimization, `scheduler.step()` inside `training_step` runs
    before Lightning's optimizer step and on top of Lightning's own scheduling.

    ## Thresholds
    Fails when a scheduler's first `step()` comes before its optimizer's first `step()`, or when
    the code is given the scheduler (a `scheduler` parameter, or Lightning's manual optimization,
    where Lightning steps no scheduler) and three steps plus an epoch end never advance it. Fixed;
    turn the check off with `--train-sanity-ignore TRN108`.

    ## Known problems
    A scheduler that the code holds (closure, attribute) but does not advance within the three
    steps is skipped, not failed: it may be advanced per epoch by a loop traincheck does not run
    (`for epoch ...: train_epoch(...); scheduler.step()`). ReduceLROnPlateau is usually stepped
    with a validation metric outside the step; one that is never advanced is skipped too.

    ## Example
    ```python
    def step(model, batch, optimizer, loss_fn, scheduler):
        ...
        loss.backward()
        scheduler.step()
        optimizer.step()
    ```
    """

    CODE = "TRN108"
    NEEDS_STEP = True
    PASSING = (lambda: ex.setup(step=_step_then("optimizer first"), scheduler=_warmup),
               lambda: _closure("optimizer first"),
               lambda: ex.setup(step=None, train_epoch=_epoch_then("optimizer first"), scheduler=_warmup))
    FAILING = (lambda: ex.setup(step=_step_then("scheduler first"), scheduler=_warmup),
               lambda: ex.setup(step=_step_then("never"), scheduler=_warmup),
               lambda: _closure("scheduler first"),
               lambda: ex.setup(step=None, train_epoch=_epoch_then("scheduler first"), scheduler=_warmup),
               lambda: ex.setup(step=None, train_epoch=_epoch_then("never"), scheduler=_warmup))

    def run(self, h: Harness) -> CheckResult:
        t = h.training
        if t.scheduler is None:
            return self.skipped("no `scheduler` declared in the Training")
        code = t.step if t.step is not None else t.train_epoch
        lightning = code.__self__ if is_lightning(t) else None  # type: ignore[union-attr]
        order: list[tuple[str, str]] = []
        with h.session() as s:
            if s.scheduler is None:
                return self.skipped("the `scheduler` factory returned None (configure_optimizers() returned no "
                                    "scheduler)")
            names = {id(opt): name for name, opt in named_optimizers(s.optimizer).items()}
            handles = [opt.register_step_post_hook(lambda *a, n=name: order.append(("O", n)))
                       for name, opt in named_optimizers(s.optimizer).items()]
            watched = _watch(s.scheduler, names, order)
            try:
                s.train(STEPS)
                if lightning is not None:  # the epoch ends after these batches: Lightning's epoch-end scheduling
                    with s.phase("step"):
                        call_user("on_train_epoch_end", lightning.end_epoch, s.model, s.optimizer, 0)
            finally:
                for handle in handles:
                    handle.remove()
                for sched in watched:
                    sched.__dict__.pop("step", None)
        return self._verdict(order, watched, _names_scheduler(code), lightning)

    def _verdict(self, order: list[tuple[str, str]], watched: dict[Any, tuple[str, str]], given: bool,
                 lightning: Any) -> CheckResult:
        opt_steps = sum(kind == "O" for kind, _ in order)
        facts: dict[str, Any] = dict(optimizer_steps=opt_steps, scheduler_steps=sum(k == "L" for k, _ in order),
                                     calls=STEPS, schedulers=len(watched))
        if not opt_steps:
            return self.skipped("the step never called optimizer.step()")
        for label, opt in watched.values():
            first_l = next((i for i, e in enumerate(order) if e == ("L", label)), None)
            first_o = next((i for i, e in enumerate(order) if e == ("O", opt)), None)
            if first_l is not None and (first_o is None or first_l < first_o):
                where = "the step" if lightning is None else "training_step"
                advice = ("with automatic optimization Lightning steps the schedulers of configure_optimizers itself, "
                          "after optimizer.step() (interval 'step') or at each epoch end (interval 'epoch'): remove "
                          "the call from training_step" if lightning is not None and not lightning.manual else
                          "call `scheduler.step()` after `optimizer.step()`")
                return self.failed(
                    f"{label}.step() ran before the first optimizer.step() of its optimizer `{opt}` in {where}: the schedule's "
                    f"first value is skipped (the learning rate is one position ahead from the start; "
                    f"{facts['scheduler_steps']} scheduler and {opt_steps} optimizer steps in {STEPS} calls); {advice}",
                    scheduler=label, optimizer=opt, **facts)
        # A scheduler whose optimizer did not step in the window (a generator updated every 5th call) is not judged.
        idle = [label for label, opt in watched.values() if ("L", label) not in order and ("O", opt) in order]
        if not idle:
            how = " and Lightning's epoch end" if lightning is not None else ""
            return self.passed(f"{facts['scheduler_steps']} scheduler step(s) in {STEPS} calls{how}, each after "
                               f"its optimizer's step ({opt_steps} optimizer steps)", **facts)
        plateau = all(isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) for s in watched
                      if watched[s][0] in idle)
        if plateau:
            return self.skipped(f"{_names(idle)} (ReduceLROnPlateau) was not advanced in {STEPS} calls: it is stepped "
                                "with a metric, usually after validation, which this check does not run")
        if lightning is not None and lightning.manual and lightning.hook_needs_trainer:
            return self.skipped(f"{_names(idle)} was not advanced in {STEPS} calls, and on_train_epoch_end, which may "
                                "step it, reads the Trainer (`self.trainer`), which traincheck does not build")
        if lightning is not None and lightning.manual:
            return self.failed(
                f"in {STEPS} calls of training_step and an epoch end, {_names(idle)} never advanced: with manual "
                "optimization Lightning steps no scheduler, so the learning rate stays at its initial value; call "
                "`self.lr_schedulers()` and `.step()` it after `opt.step()` in training_step (or in "
                "on_train_epoch_end for a per-epoch schedule)", idle=_names(idle), **facts)
        if given:
            return self.failed(
                f"in {STEPS} calls the step ran {opt_steps} optimizer step(s) but never advanced {_names(idle)} it "
                "was given, so the learning rate stays at its initial value; call `scheduler.step()` after "
                "`optimizer.step()` (or do not pass the scheduler to the step if it is stepped per epoch)",
                idle=_names(idle), **facts)
        return self.skipped(
            f"{_names(idle)} was not advanced in {STEPS} calls, and the step does not take a `scheduler` argument: "
            "it may be stepped per epoch by a loop traincheck does not run; give the step (or train_epoch) a "
            "`scheduler` parameter if it should advance it")


def _names_scheduler(code: Any) -> bool:
    """True when ``code`` has a parameter named ``scheduler`` (a ``**kwargs`` catch-all does not ask for it)."""
    try:
        return "scheduler" in inspect.signature(code).parameters
    except (TypeError, ValueError):
        return False


def _names(labels: list[str]) -> str:
    return ", ".join(f"`{label}`" for label in labels)


def _watch(scheduler: Any, optimizers: dict[int, str], order: list[tuple[str, str]]) -> dict[Any, tuple[str, str]]:
    """Record each scheduler.step() call in ``order``; return scheduler -> (its label, its optimizer's name)."""
    found = named_optimizers(scheduler)
    watched: dict[Any, tuple[str, str]] = {}
    for key, sched in found.items():
        label = "scheduler" if len(found) == 1 else f"scheduler[{key.replace('optimizer[', '').rstrip(']')}]"
        owner = optimizers.get(id(getattr(sched, "optimizer", None)), next(iter(optimizers.values())))
        original = sched.step

        def step(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            order.append(("L", _label))
            return _original(*args, **kwargs)

        sched.step = step
        watched[sched] = (label, owner)
    return watched

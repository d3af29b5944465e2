"""TRN108: the LR scheduler is stepped before the optimizer, or never, by the step that is given it."""

from __future__ import annotations

from typing import Any, Callable

import torch

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness, named_optimizers
from pytest_traincheck.harness.session import accepts

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


class SchedulerStepMisordered(Check):
    """Fail when the step advances its scheduler before optimizer.step(), or never advances it.

    ## What it measures
    Builds the declared `scheduler` over a fresh optimizer, passes it to a step that takes a
    `scheduler` argument, and records the order of `scheduler.step()` and `optimizer.step()` calls
    over three steps.

    ## Why it matters
    A scheduler stepped before the first optimizer step skips the first value of its schedule (the
    warmup starts one position late, a step decay comes early); a scheduler handed to the step but
    never stepped leaves the learning rate at its initial value for the whole run.

    ## Thresholds
    Fails when the first `scheduler.step()` comes before the first `optimizer.step()`, or when three
    steps advance the optimizer but never the scheduler. Fixed; turn the check off with
    `--train-sanity-ignore TRN108`.

    ## Known problems
    Needs `Training(scheduler=...)` and a step (or train_epoch) with a `scheduler` parameter: a scheduler
    stepped per epoch outside the step is not seen (then do not pass it to the step).

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
    PASSING = (lambda: ex.setup(step=_step_then("optimizer first"), scheduler=_warmup),)
    FAILING = (lambda: ex.setup(step=_step_then("scheduler first"), scheduler=_warmup),
               lambda: ex.setup(step=_step_then("never"), scheduler=_warmup))

    def run(self, h: Harness) -> CheckResult:
        t = h.training
        if t.scheduler is None:
            return self.skipped("no `scheduler` declared in the Training")
        code = t.step if t.step is not None else t.train_epoch
        if not accepts(code, "scheduler"):
            return self.skipped("the step does not take a `scheduler` argument, so it cannot advance it; "
                                "give it one (`def step(model, batch, optimizer, loss_fn, scheduler)`) to check the order")
        order: list[str] = []
        with h.session() as s:
            handles = [opt.register_step_post_hook(lambda *a, n=name: order.append(f"O:{n}"))
                       for name, opt in named_optimizers(s.optimizer).items()]
            undo = _watch(s.scheduler, order)
            try:
                s.train(STEPS)
            finally:
                for handle in handles:
                    handle.remove()
                undo()
        opt_steps = sum(e.startswith("O:") for e in order)
        sched_steps = order.count("L")
        facts: dict[str, Any] = dict(optimizer_steps=opt_steps, scheduler_steps=sched_steps, calls=STEPS)
        if not opt_steps:
            return self.skipped("the step never called optimizer.step()")
        if "L" in order and order.index("L") < next(i for i, e in enumerate(order) if e.startswith("O:")):
            return self.failed(
                "scheduler.step() ran before the first optimizer.step(): the schedule's first value is skipped "
                f"(the learning rate is one position ahead from the start; {sched_steps} scheduler and {opt_steps} "
                "optimizer steps); call `scheduler.step()` after `optimizer.step()`", **facts)
        if not sched_steps:
            return self.failed(
                f"in {STEPS} calls the step ran {opt_steps} optimizer step(s) but never advanced the scheduler it was "
                "given, so the learning rate stays at its initial value; call `scheduler.step()` after "
                "`optimizer.step()` (or do not pass the scheduler to the step if it is stepped per epoch)", **facts)
        return self.passed(f"{sched_steps} scheduler step(s), each after an optimizer step ({opt_steps} in {STEPS} "
                           "calls)", **facts)


def _watch(scheduler: Any, order: list[str]) -> Callable[[], None]:
    """Record each scheduler.step() call in ``order``; return what removes the recording."""
    schedulers = list(named_optimizers(scheduler).values()) if scheduler is not None else []
    for sched in schedulers:
        original = sched.step

        def step(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            order.append("L")
            return _original(*args, **kwargs)

        sched.step = step

    def undo() -> None:
        for sched in schedulers:
            sched.__dict__.pop("step", None)
    return undo

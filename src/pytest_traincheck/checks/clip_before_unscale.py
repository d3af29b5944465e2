"""TRN110: with a GradScaler, gradients are clipped while still scaled (before `scaler.unscale_`)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness

STEPS = 2


def _amp_step(unscale_first: bool, clip: bool = True) -> Any:
    def step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        scaler = _SCALERS.setdefault(id(optimizer), torch.amp.GradScaler("cpu"))
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        if unscale_first:
            scaler.unscale_(optimizer)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        return loss
    return step


_SCALERS: dict[int, Any] = {}  # one scaler per optimizer, as a training script keeps one per run


class ClipBeforeUnscale(Check):
    """Fail when a clip_grad_* call falls between a scaled backward() and `scaler.unscale_(optimizer)`.

    ## What it measures
    Runs the user's step twice, recording each enabled `GradScaler.scale()` and `unscale_()` call and
    each `clip_grad_norm_` / `clip_grad_value_` call against the optimizer steps.

    ## Why it matters
    `scaler.scale(loss)` multiplies every gradient by the loss scale (65536 by default). Clipping before
    `scaler.unscale_(optimizer)` compares the scaled norm with the threshold, which is then effectively
    multiplied by the scale: nothing is clipped, and a gradient spike goes through.

    ## Thresholds
    Fails on any clip between a scaled backward and the step with no `unscale_` before it in that step.
    Fixed; turn the check off with `--train-sanity-ignore TRN110`.

    ## Known problems
    Needs the user's own step and an enabled `torch.amp.GradScaler` (a disabled scaler is not mixed
    precision and is skipped).

    ## Example
    ```python
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    ```
    """

    CODE = "TRN110"
    NEEDS_STEP = True
    PASSING = (lambda: ex.setup(step=_amp_step(unscale_first=True)),
               lambda: ex.setup(step=_amp_step(unscale_first=False, clip=False)))
    FAILING = (lambda: ex.setup(step=_amp_step(unscale_first=False)),)

    def run(self, h: Harness) -> CheckResult:
        scaled: list[int] = []  # optimizer-step index of each enabled scaler.scale() call
        unscaled: list[tuple[int, int]] = []  # (step index, clip calls so far) of each unscale_
        with h.session() as s, _watch_scalers(s, scaled, unscaled):
            s.train(STEPS)
            clips = list(s.trace.clips)
        if not scaled:
            return self.skipped("the training step uses no enabled GradScaler (scaler.scale(loss))")
        if not clips:
            return self.passed("the training step scales the loss and does not clip", scaled_steps=len(set(scaled)))
        for i, clip in enumerate(clips):
            if not clip.effective or clip.step not in scaled:
                continue
            if not any(step == clip.step and before <= i for step, before in unscaled):
                return self.failed(
                    f"at step {clip.step + 1}, {clip.function} ran on gradients still multiplied by the loss scale "
                    "(no `scaler.unscale_(optimizer)` before it): the clipping threshold is effectively multiplied by "
                    "the scale (65536 by default), so nothing is clipped; call `scaler.unscale_(optimizer)` "
                    "before clipping", step=clip.step + 1, function=clip.function, clip_calls=len(clips))
        return self.passed(f"{len(clips)} clip call(s), each after `scaler.unscale_`", clip_calls=len(clips))


@contextlib.contextmanager
def _watch_scalers(s: Any, scaled: list[int], unscaled: list[tuple[int, int]]) -> Iterator[None]:
    """Record GradScaler.scale/unscale_ calls of the step against the trace's step and clip counts."""
    cls = torch.amp.GradScaler
    original_scale, original_unscale = cls.scale, cls.unscale_

    def scale(self: Any, outputs: Any) -> Any:
        if s.trace.phase == "step" and self.is_enabled():
            scaled.append(len(s.trace.steps))
        return original_scale(self, outputs)

    def unscale_(self: Any, optimizer: Any) -> Any:
        if s.trace.phase == "step":
            unscaled.append((len(s.trace.steps), len(s.trace.clips)))
        return original_unscale(self, optimizer)

    cls.scale, cls.unscale_ = scale, unscale_  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.scale, cls.unscale_ = original_scale, original_unscale  # type: ignore[method-assign]

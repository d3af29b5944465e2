"""`Record`: the one instrumented training run per setup and seed that observing checks read.

Most checks only *watch* the user's step train on the fixed batch: the order of
backward/zero_grad/step, stale gradients, clip calls, the loss inputs, modes,
gradient sizes, updates, non-finite values, dead ReLUs, the loss curve. Each used
to train a fresh model for itself; now `build` trains once, from the seed's
initial weights, and keeps what was seen (never the model, so a record is small).
`Harness.record()` memoises it on the setup's `SetupData`, so every check (and
every pytest item) of a setup shares it; a retry with another seed gets its own.

The run lasts until the overfit check's question is answered (the loss at 10% of
its start with the batch predicted right, or ``overfit_steps``), and at least
`WINDOW` steps, which every other observer reads. Extra observations (accuracy,
ReLU statistics) run without touching the random number generators, so the
steps are the ones a plain run from the same seed takes, and a check that needs
a closer look (TRN603's module hooks) can replay them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from pytest_traincheck.harness.activations import measure_relus
from pytest_traincheck.harness.core import BudgetExceeded, Clock, MissingField, UserCodeError, isolated
from pytest_traincheck.harness.session import Session, infer_task, num_classes
from pytest_traincheck.harness.spec import SetupError
from pytest_traincheck.harness.trace import (ClipCall, ForwardRecord, GraphCut, LossCall, StaleGrad, StepRecord,
                                              Trace)

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.core import Harness

__all__ = ["MIN_STEPS", "OVERFIT_RATIO", "Record", "UPDATE_STEPS", "WINDOW", "build"]

WINDOW = 10  # steps every observer may read (TRN603 and TRN606 judge ten)
MIN_STEPS = 3  # a run that turns non-finite still gets these (TRN101, TRN105, TRN602 judge three)
UPDATE_STEPS = 3  # first steps at which each parameter's change is measured (TRN602)
OVERFIT_RATIO = 0.1  # TRN601's target: the loss at 10% of its initial value


@dataclass
class Record:
    """What one instrumented run of the user's step on the fixed batch showed."""

    seed: int
    names: list[str]  # every parameter, in model order
    trainable: list[str]  # parameters with requires_grad
    optimized: list[str]  # the optimizer's parameters, in its order
    modules: list[tuple[str, type]]  # every module's name and class
    mode_layers: bool  # the model has dropout/BatchNorm layers that are not frozen
    weights: list[tuple[str, int]]  # trainable weight matrices/kernels (not embeddings) and their sizes
    losses: list[float] = field(default_factory=list)  # the step's returned loss, per step
    steps: list[StepRecord] = field(default_factory=list)
    stale: list[StaleGrad] = field(default_factory=list)
    clips: list[ClipCall] = field(default_factory=list)
    cuts: list[GraphCut] = field(default_factory=list)  # backward() calls that reached no parameter
    backward_calls: int = 0
    forwards: list[ForwardRecord] = field(default_factory=list)
    loss_calls: list[LossCall] = field(default_factory=list)
    accumulations: Counter = field(default_factory=Counter)
    nonzero: set[str] = field(default_factory=set)  # got a nonzero gradient from some backward
    overfit_end: Optional[int] = None  # steps TRN601 judges (it stops once answered)
    overfit_accuracy: Optional[float] = None  # batch accuracy at that point (None: not classification)
    relus_start: list[tuple[str, float, int]] = field(default_factory=list)  # dead fraction per ReLU at init
    relus_end: list[tuple[str, float, int]] = field(default_factory=list)  # ... after `relus_steps` steps
    relus_steps: int = 0
    error: Optional[BaseException] = None  # what stopped the run early (user code, setup, budget)
    # Several optimizers (a GAN): what each one's trace showed, by name; `cleared_stale` are the step
    # intervals where stale gradients were cleared before that optimizer stepped again.
    per_optimizer: dict[str, Record] = field(default_factory=dict)
    cleared_stale: set[int] = field(default_factory=set)

    def by_optimizer(self) -> dict[str, Record]:
        """Return the record of each optimizer by name (this record itself for one optimizer)."""
        return self.per_optimizer or {"optimizer": self}

    def need(self, steps: int) -> None:
        """Raise the error that stopped the run if it stopped before ``steps`` steps."""
        if self.error is not None and len(self.losses) < max(steps, 1):
            raise self.error

    @property
    def first_step_calls(self) -> list[LossCall]:
        """Return the loss calls the first training step made."""
        return [c for c in self.loss_calls if c.phase == "step" and c.step == 0 and c.input is not None]

    def nonfinite_step(self, steps: int) -> Optional[int]:
        """Return the first step (1-based) among the first ``steps`` with a non-finite loss/gradient/parameter."""
        for i in range(min(steps, max(len(self.losses), len(self.steps)))):
            loss_bad = i < len(self.losses) and not math.isfinite(self.losses[i])
            rec = self.steps[i] if i < len(self.steps) else None
            if loss_bad or (rec is not None and (rec.grads_nonfinite or rec.params_finite is False)):
                return i + 1
        return None

    def series(self, steps: int) -> dict[str, list[float]]:
        """Return per-parameter gradient norms, mean/max |grad| and update ratios of the first ``steps`` steps."""
        out: dict[str, list[float]] = {}
        for rec in self.steps[:steps]:
            for name, value in rec.grad_norms.items():
                out.setdefault(f"grad_norm/{name}", []).append(value)
            for name, value in rec.grad_abs_means.items():  # per-layer gradient flow of the HTML report
                out.setdefault(f"grad_abs_mean/{name}", []).append(value)
            for name, value in rec.grad_abs_maxes.items():
                out.setdefault(f"grad_abs_max/{name}", []).append(value)
            for name, value in rec.update_ratio.items():
                out.setdefault(f"update_ratio/{name}", []).append(value)
        return out


def build(h: Harness, ratios: bool = False) -> Record:
    """Train a fresh model with the user's step under full instrumentation; return what it showed."""
    t = h.training
    limit = max(t.overfit_steps, WINDOW)
    clock = Clock(h.clock.budget, stage="the shared training run (read by every check that observes training)")
    run = type(h)(h.data, seed=h.seed, device=str(h.device))
    run.clock = clock
    with h.clock.paused(), clock.backstop(nested=True), isolated(h.seed):
        model = run.model()
        optimizer = run.optimizer(model)
        traces = run.traces(model, optimizer, track_updates=limit if ratios else UPDATE_STEPS,
                            ratios=ratios, watch_params=WINDOW)
        trace = next(iter(traces.values()))
        rec = Record(h.seed, list(trace.names.values()),
                     [n for n, p in model.named_parameters() if p.requires_grad],
                     [trace.name(p) for p in trace.opt_params()],
                     [(n, type(m)) for n, m in model.named_modules()], bool(trace.mode_modules), _weights(model))
        session = Session(run, model, optimizer, traces)
        try:
            session.scheduler = run.scheduler(optimizer)
            _train(run, session, rec, limit, clock)
        except (UserCodeError, SetupError, BudgetExceeded) as exc:
            rec.error = _unpinned(exc)
        finally:
            for each in reversed(list(traces.values())):
                try:
                    each.settle()
                finally:
                    each.close()
        _collect(rec, trace)
        if len(traces) > 1:
            for name, each in traces.items():
                part = Record(h.seed, rec.names, rec.trainable, [each.name(p) for p in each.opt_params()],
                              rec.modules, rec.mode_layers, rec.weights, losses=rec.losses, error=rec.error)
                _collect(part, each)
                rec.per_optimizer[name] = part
    return rec


def _train(h: Harness, s: Session, rec: Record, limit: int, clock: Clock) -> None:
    t = h.training
    rec.relus_start = _quietly(h, lambda: measure_relus(s.model, lambda: h.forward(s.model))) or []
    while len(rec.losses) < limit:
        done = len(rec.losses)
        clock.stage = f"the shared training run (step {done + 1} of up to {limit}; every observing check reads it)"
        if t.train_epoch is None:
            rec.losses.append(s.step())
        else:  # one `train_epoch` call per stretch between the points where the run looks at the model
            marks = [m for m in (WINDOW, t.overfit_steps, limit) if m > done]
            rec.losses.extend(s.train(min(marks) - done))
        n = len(rec.losses)
        if rec.relus_steps == 0 and n >= WINDOW:
            rec.relus_end, rec.relus_steps = _quietly(h, lambda: measure_relus(s.model, lambda: h.forward(s.model))) or [], n
        if rec.overfit_end is None:
            last = rec.losses[-1]
            target = math.isfinite(last) and last <= OVERFIT_RATIO * rec.losses[0]
            if not math.isfinite(last) or n >= t.overfit_steps or target:
                accuracy = _quietly(h, s.accuracy)
                if not target or accuracy in (None, 1.0) or n >= t.overfit_steps:
                    rec.overfit_end, rec.overfit_accuracy = n, accuracy
        diverged = not math.isfinite(rec.losses[-1]) or any(r.grads_nonfinite for r in s.trace.steps[-1:])
        if diverged and n >= MIN_STEPS:
            break
        if rec.overfit_end is not None and n >= WINDOW:
            break
    if rec.relus_steps == 0 and rec.losses:
        rec.relus_end = _quietly(h, lambda: measure_relus(s.model, lambda: h.forward(s.model))) or []
        rec.relus_steps = len(rec.losses)


def _weights(model: nn.Module) -> list[tuple[str, int]]:
    lookups = {id(p) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for p in m.parameters()}
    return [(n, p.numel()) for n, p in model.named_parameters()
            if p.requires_grad and p.ndim >= 2 and id(p) not in lookups and not n.endswith(SCORE_PROJECTIONS)]


# Attention score projections (query/key) get a gradient only through how far the softmax is from
# uniform, which is tiny at initialization in every healthy transformer: they are no evidence of
# vanishing gradients along the residual path (TRN605).
SCORE_PROJECTIONS = (".query.weight", ".key.weight", "q_proj.weight", "k_proj.weight", ".q.weight", ".k.weight",
                     "q_lin.weight", "k_lin.weight")


def _quietly(h: Harness, fn: Any) -> Any:
    """Run an observation without consuming random numbers, so the training steps stay those of a plain run."""
    devices = [h.device] if h.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            return fn()
        except (MissingField, UserCodeError):  # a dict of models, a module without forward: only the step
            return None  # knows how to call them; the run goes on without this observation


def _collect(rec: Record, trace: Trace) -> None:
    rec.steps, rec.stale, rec.clips = trace.steps, trace.stale, trace.clips
    rec.cuts, rec.backward_calls = trace.cuts, trace.backward_calls
    rec.forwards, rec.loss_calls = trace.forwards, trace.losses
    rec.accumulations, rec.nonzero = trace.accumulations, set(trace.accum_nonzero)
    rec.cleared_stale = set(trace.cleared_stale)


def _unpinned(exc: BaseException) -> BaseException:
    """Drop the tracebacks of ``exc`` and its causes: their frames hold the run's model and optimizer."""
    seen = exc
    while seen is not None:
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    original = getattr(exc, "original", None)
    if isinstance(original, BaseException):
        original.__traceback__ = None
    return exc


def task_of(h: Harness, rec: Record) -> str:
    """Return the task of the setup as the run showed it (declared, else from the loss and targets)."""
    return infer_task(h.training, rec.loss_calls, h)


def classes_of(h: Harness, rec: Record) -> Optional[int]:
    """Return the declared class count, else the width the classification loss received."""
    return num_classes(h.training, rec.loss_calls)

"""`Session`: one fresh model + optimizer, driven by the user's step under a `Trace`."""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness.core import call_user
from pytest_traincheck.harness.spec import SetupError, Training
from pytest_traincheck.harness.trace import LossCall, Trace

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.core import Harness

__all__ = ["Session", "infer_task", "loss_kind", "num_classes"]

CLASSIFICATION_LOSSES = ("cross_entropy", "nll_loss")
BINARY_LOSSES = ("binary_cross_entropy", "binary_cross_entropy_with_logits")


def _textbook(h: Harness) -> Callable[..., Any]:
    """Return the textbook step for any batch: the harness finds its inputs and targets."""
    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
        optimizer.zero_grad()
        out = h.forward(model, batch)
        own = tb.loss_of(out) if not isinstance(out, torch.Tensor) or loss_fn is None else None
        if own is None:
            if loss_fn is None:
                raise SetupError("the model's output carries no `.loss` and no `loss_fn` is declared")
            own = loss_fn(tb.logits_of(out), h.targets(batch))
        own.backward()
        optimizer.step()
        return own
    return step


class Session:
    """Drive one fresh model + optimizer through the user's step, evaluate and plain forwards."""

    def __init__(self, harness: Harness, model: nn.Module, optimizer: Any, trace: Any) -> None:
        # `trace` is one Trace, or a Trace per optimizer by name (several optimizers: a GAN).
        self.traces: dict[str, Trace] = trace if isinstance(trace, dict) else {"optimizer": trace}
        self.h, self.model, self.optimizer = harness, model, optimizer
        self.trace = next(iter(self.traces.values()))
        self.training = harness.training
        self.scheduler: Any = None  # built by the harness from `Training(scheduler=...)`
        self.calls = 0  # user step calls so far (`step_index`)
        self.loss_values: list[float] = []  # every loss_fn result during the user's step
        self.loss_fn = self._wrap_loss(self.training.loss_fn) if self.training.loss_fn is not None else None

    # -- running user code ----------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Mark what runs inside as the user's ``step`` or ``evaluate`` (hooks ignore ``harness``)."""
        previous = {key: t.phase for key, t in self.traces.items()}
        for t in self.traces.values():
            t.phase = name
        self.h.clock.where = {"step": "the training step", "evaluate": "`evaluate`"}.get(name, "traincheck")
        try:
            yield
        finally:
            for key, t in self.traces.items():
                t.phase = previous[key]

    def step(self) -> float:
        """Run the user's step (or the textbook step) once on the fixed batch; return its loss."""
        if self.training.train_epoch is not None:
            return self.train(1)[0]
        user = self.training.step
        fn, where = (user, "the `step` function") if user is not None else (_textbook(self.h), "the textbook step")
        values = []
        for _ in range(self.training.accumulate):  # `accumulate` calls per optimizer update
            extra = self.extra_arguments(fn)
            self.calls += 1
            with self.phase("step"):
                call = functools.partial(fn, **extra) if extra else fn
                out = call_user(where, call, self.model, self.h.batch(), self.optimizer, self.loss_fn)
            values.append(_as_loss(out, where, self.trace.pending.value))
        return sum(values) / len(values)

    def extra_arguments(self, fn: Callable[..., Any]) -> dict[str, Any]:
        """Return ``scheduler=`` and ``step_index=`` for a step or train_epoch whose signature takes them."""
        extra: dict[str, Any] = {}
        if accepts(fn, "scheduler") and self.scheduler is not None:
            extra["scheduler"] = self.scheduler
        if accepts(fn, "step_index"):
            extra["step_index"] = self.calls
        return extra

    def train(self, steps: int, stop: Optional[Callable[[list[float]], bool]] = None) -> list[float]:
        """Run ``steps`` steps on the fixed batch (one `train_epoch` call over repeated batches)."""
        if self.training.train_epoch is None:
            losses: list[float] = []
            for _ in range(steps):
                losses.append(self.step())
                if stop is not None and stop(losses):
                    break
            return losses
        start, seen = len(self.loss_values), len(self.trace.losses)
        extra = self.extra_arguments(self.training.train_epoch)
        loader = self.repeated_loader(steps * self.training.accumulate)
        with self.phase("step"):
            epoch = self.training.train_epoch
            call_user("the `train_epoch` function", functools.partial(epoch, **extra) if extra else epoch,
                      self.model, loader, self.optimizer, self.loss_fn)
        self.trace.settle()
        losses = self.loss_values[start:] or [c.value for c in self.trace.losses[seen:] if c.value is not None]
        if not losses:
            raise SetupError("the `train_epoch` function computed no loss that traincheck could see: "
                             "call the `loss_fn` it is given (or a torch.nn.functional loss)")
        return losses

    def evaluate(self) -> Any:
        """Run the user's `evaluate(model, loader)` on the fixed evaluation batch."""
        if self.training.evaluate is None:
            raise SetupError("no `evaluate` function declared")
        loader = self._loader(self.h.eval_batch, 1)
        with self.phase("evaluate"):
            return call_user("the `evaluate` function", self.training.evaluate, self.model, loader)

    def repeated_loader(self, steps: int) -> DataLoader:
        """Return a DataLoader that yields the fixed batch ``steps`` times."""
        return self._loader(self.h.batch, steps)

    @staticmethod
    def _loader(make: Callable[[], Any], times: int) -> DataLoader:
        """Return a DataLoader yielding ``make()``'s batch ``times`` times, as the user's own loader shapes it."""
        batch = make()
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch) \
                and batch[0].ndim and batch[1].ndim and len(batch[0]) == len(batch[1]):
            x, y = batch  # keep the plain (inputs, targets) loader that code may query (`loader.dataset`)
            return DataLoader(TensorDataset(x, y), batch_sampler=[list(range(len(x)))] * times)
        return DataLoader(_Repeat(make, times), batch_size=None, collate_fn=_same)

    def _wrap_loss(self, loss_fn: Callable[..., Any]) -> Callable[..., Any]:
        def observed_loss(*args: Any, **kwargs: Any) -> Any:
            out = loss_fn(*args, **kwargs)
            if self.trace.phase == "step" and isinstance(out, torch.Tensor) and out.numel() == 1:
                self.loss_values.append(float("nan"))  # read with the step's other values
                self.trace.pending.want(out.detach().reshape(()), self.loss_values, len(self.loss_values) - 1, out)
            return out

        return observed_loss

    # -- harness-side observations ----------------------------------------------------------
    def predict(self, train_mode: bool = False) -> Any:
        """Return the model's output on the fixed batch without gradients, modes restored."""
        modes = {m: m.training for m in self.model.modules()}
        self.model.train(train_mode)
        try:
            with torch.no_grad():
                return self.h.forward(self.model)
        finally:
            for m, mode in modes.items():
                m.training = mode

    def accuracy(self) -> Optional[float]:
        """Return the best of eval/train-mode accuracy on the fixed batch, or None if not classification."""
        task = self.task()
        if task not in ("classification", "binary"):
            return None
        try:
            y = self.h.target_tensor()
        except tb.MissingField:
            return None  # the loss alone judges the run
        best: Optional[float] = None
        for train_mode in (False, True):
            out = self.predict(train_mode)
            acc = _accuracy(tb.logits_of(out, len(y)), y, task, self.loss_kind())
            if acc is not None:
                best = acc if best is None else max(best, acc)
        return best

    def loss_kind(self) -> Optional[str]:
        """Return the functional loss the step used (``cross_entropy``, ``mse_loss``...), if seen."""
        return loss_kind(self.trace.losses)

    def task(self) -> str:
        """Return the declared task, or infer it from the loss used and the targets."""
        return infer_task(self.training, self.trace.losses, self.h)

    def num_classes(self) -> Optional[int]:
        """Return the declared class count, else the width of the classification loss input."""
        return num_classes(self.training, self.trace.losses)


def accepts(fn: Any, name: str) -> bool:
    """True when ``fn`` takes a parameter called ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class _Repeat(torch.utils.data.Dataset):
    """``times`` fresh copies of one batch, for a loader that must not collate them again."""

    def __init__(self, make: Callable[[], Any], times: int) -> None:
        self.make, self.times = make, times

    def __len__(self) -> int:
        return self.times

    def __getitem__(self, index: int) -> Any:
        return self.make()


def _same(batch: Any) -> Any:
    return batch


def loss_kind(calls: list[LossCall]) -> Optional[str]:
    """Return the kind of the first functional loss the step called, if any."""
    kinds = [c.kind for c in calls if c.phase == "step"]
    return kinds[0] if kinds else None


def infer_task(training: Training, calls: list[LossCall], h: Harness) -> str:
    """Return the declared task, or infer it from the loss used and the targets."""
    if training.task != "auto":
        return training.task
    kind = loss_kind(calls)
    if kind in CLASSIFICATION_LOSSES:
        return "classification"
    if kind in BINARY_LOSSES:
        return "binary"
    if kind == "mse_loss":
        return "regression"
    try:
        y = h.target_tensor()
    except tb.MissingField:
        return "unknown"
    return "classification" if not y.is_floating_point() and not y.is_complex() else "unknown"


def num_classes(training: Training, calls: list[LossCall]) -> Optional[int]:
    """Return the declared class count, else the width of the classification loss input."""
    if training.num_classes is not None:
        return training.num_classes
    for call in calls:
        if call.kind in CLASSIFICATION_LOSSES and call.input is not None and call.input.ndim >= 2:
            return int(call.input.shape[1])
    return None


def _as_loss(out: Any, where: str, value: Callable[[torch.Tensor], float]) -> float:
    if out is not None and not isinstance(out, (torch.Tensor, int, float)):
        found = tb.loss_of(out)  # a dict with "loss" or an output object with `.loss`
        if found is None:
            raise SetupError(f"{where} returned {type(out).__name__} without a scalar `loss`; return the loss "
                             "(a scalar tensor, a float, or a dict / output object with a `loss` entry)")
        out = found
    if out is None:
        raise SetupError(f"{where} returned None; it must return the loss (a scalar tensor or a float): "
                         "end it with `return loss`")
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise SetupError(f"{where} returned a tensor of shape {tuple(out.shape)}; return the scalar loss "
                             "(use reduction='mean' or call `.mean()`)")
        return value(out)  # already read with the step's norms when it is the loss_fn's result
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return float(out)
    raise SetupError(f"{where} returned {type(out).__name__}; it must return the loss (a scalar tensor or a float)")


def _accuracy(out: Any, y: torch.Tensor, task: str, kind: Optional[str]) -> Optional[float]:
    if not isinstance(out, torch.Tensor) or out.shape[0] != y.shape[0]:
        return None
    if task == "classification" and out.ndim >= 2 and out.shape[1] > 1 and not y.is_floating_point():
        return float((out.argmax(1) == y).float().mean())
    if task == "binary" and out.numel() == y.numel():
        threshold = 0.5 if kind == "binary_cross_entropy" else 0.0
        return float(((out.reshape(y.shape) > threshold) == (y > 0.5)).float().mean())
    return None

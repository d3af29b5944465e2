"""Isolation and bounded execution of the user's setup for one check.

A `Harness` hands a check fresh objects from the setup's factories, the fixed
batch, and `Session`s that run the user's step under a `Trace`. `isolated()`
forks and restores torch's global state around each check, and `Clock`
enforces the per-check time budget.
"""

from __future__ import annotations

import collections.abc
import contextlib
import math
import os
import random
import signal
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import torch
from torch import nn

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness.spec import SetupError, Training
from pytest_traincheck.harness.trace import Trace

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.session import Session

__all__ = ["BudgetExceeded", "Harness", "MissingField", "SetupData", "UserCodeError", "isolated"]

MissingField = tb.MissingField

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BudgetExceeded(BaseException):
    """The check ran past its time budget (a BaseException so `except Exception` cannot eat it)."""

    def __init__(self, message: str, stage: str = "the check", where: str = "setup") -> None:
        super().__init__(message)
        self.stage, self.where = stage, where
        self.owner: Optional[str] = None  # the check that reported it first; the others are blocked by it


class UserCodeError(Exception):
    """The user's factory, step or evaluate function raised; carries their traceback."""

    def __init__(self, where: str, exc: BaseException) -> None:
        self.where, self.original = where, exc
        super().__init__(f"{where} raised {type(exc).__name__}: {exc}")
        self.user_traceback = user_traceback(exc)


def user_traceback(exc: BaseException) -> str:
    """Format ``exc``'s traceback without traceback entries from traincheck itself."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_PACKAGE_DIR)]
    text = "".join(traceback.format_list(frames))
    return "Traceback (user code):\n" + text + "".join(traceback.format_exception_only(type(exc), exc))


# How traincheck calls each declared function, for the hint when a signature does not fit.
_CALLED_AS = {
    "the `step` function": ("step", "model, batch, optimizer, loss_fn"),
    "the `train_epoch` function": ("train_epoch", "model, loader, optimizer, loss_fn"),
    "the `evaluate` function": ("evaluate", "model, loader"),
    "the `save_checkpoint` function": ("save_checkpoint", "model, optimizer, path"),
    "the `load_checkpoint` function": ("load_checkpoint", "model, optimizer, path"),
}


def call_user(where: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call user code, turning its exceptions into `UserCodeError` naming ``where``."""
    try:
        return fn(*args)
    except (BudgetExceeded, SetupError, UserCodeError):
        raise
    except Exception as exc:  # noqa: BLE001 - any user failure becomes an ERROR result
        hint = _signature_hint(where, fn, args) if isinstance(exc, TypeError) else None
        if hint is not None:
            raise SetupError(hint) from None
        raise UserCodeError(where, exc) from exc


def _signature_hint(where: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Optional[str]:
    """Return how to wrap a declared function whose signature cannot take traincheck's arguments."""
    import inspect

    if where not in _CALLED_AS:
        return None
    try:
        signature = inspect.signature(fn)
        signature.bind(*args)
        return None  # the arguments fit: the TypeError came from inside the user's code
    except TypeError:
        pass
    except ValueError:  # no signature to read (some builtins)
        return None
    field, names = _CALLED_AS[where]
    name = getattr(fn, "__name__", field)
    params = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    extra = [p.name for p in params[len(args):] if p.default is p.empty]
    call = f"{name}({names}{''.join(', ' + e for e in extra)})"
    wrap = f"`{field}=lambda {names}: {call}`" if extra and name != "<lambda>" else "a function of these arguments"
    return (f"`{field}` is called as {field}({names}), but {name}{signature} cannot take those arguments; "
            f"wrap it, e.g. {wrap} (with the extra arguments bound to your values)")


# -- global state -----------------------------------------------------------------------
@contextlib.contextmanager
def isolated(seed: int) -> Iterator[None]:
    """Seed every RNG, then restore RNGs, grad mode, dtype, flags and threads, even on error."""
    saved = _save_state()
    try:
        torch.manual_seed(seed)
        random.seed(seed)
        np = _numpy()
        if np is not None:
            np.random.seed(seed % 2**32)
        yield
    finally:
        _restore_state(saved)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is optional
        return None
    return numpy


def _save_state() -> dict[str, Any]:
    np = _numpy()
    state: dict[str, Any] = {
        "torch_rng": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": np.random.get_state() if np is not None else None,
        "grad": torch.is_grad_enabled(),
        "dtype": torch.get_default_dtype(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
        "threads": torch.get_num_threads(),
        "anomaly": torch.is_anomaly_enabled(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _restore_state(state: dict[str, Any]) -> None:
    # Setters run only on change: use_deterministic_algorithms() imports torch._inductor.
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["random"])
    if state["numpy"] is not None:
        _numpy().random.set_state(state["numpy"])
    torch.set_grad_enabled(state["grad"])
    if torch.get_default_dtype() != state["dtype"]:
        torch.set_default_dtype(state["dtype"])
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if flags != (state["deterministic"], state["deterministic_warn"]):
        torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["deterministic_warn"])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state["cudnn"]
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    if torch.is_anomaly_enabled() != state["anomaly"]:
        torch.set_anomaly_enabled(state["anomaly"])
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


# -- time budget ------------------------------------------------------------------------
class Clock:
    """A per-check time budget: soft checks from hooks, plus a SIGALRM backstop in the main thread.

    ``stage`` names the part of the check that runs (the shared training run, the zeroed-input
    run, step k of n) and ``where`` the code inside it (the user's step, a factory), so a budget
    error says what was slow.
    """

    def __init__(self, budget: Optional[float], stage: str = "the check") -> None:
        self.budget = budget
        self.start = time.monotonic()
        self.where = "setup"
        self.stage = stage

    @property
    def elapsed(self) -> float:
        """Seconds since the check started (time spent paused excluded)."""
        return time.monotonic() - self.start

    def check(self) -> None:
        """Raise `BudgetExceeded` once the budget is spent (called from step/forward hooks)."""
        if self.budget is not None and self.elapsed > self.budget:
            raise self.exceeded()

    def exceeded(self) -> BudgetExceeded:
        """Return the error saying what ran past the budget, where, and how to raise the budget."""
        return BudgetExceeded(self._message(), self.stage, self.where)

    def _message(self) -> str:
        budget = self.budget or 0.0
        raised = max(2 * budget, math.ceil(self.elapsed * 1.5 / 10) * 10)
        return (f"{self.stage} ran past the time budget of {budget:g}s per check ({self.elapsed:.1f}s, slow in "
                f"{self.where}); make the setup smaller (model, batch_size, overfit_steps) or raise the budget: "
                f"`pytest --train-sanity --train-sanity-budget {raised:g}`, `budget = {raised:g}` under "
                f"[tool.traincheck.sanity], or `run_checks(..., budget={raised:g})`")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Do not count the time spent inside (work with its own clock, such as the shared run)."""
        start, where = time.monotonic(), self.where
        try:
            yield
        finally:
            self.start += time.monotonic() - start
            self.where = where

    @contextlib.contextmanager
    def backstop(self, nested: bool = False) -> Iterator[None]:
        """Interrupt code that never reaches a hook (a hang in the user's step) with SIGALRM.

        ``nested``: inside another clock's backstop that is paused meanwhile, so its alarm
        is re-armed with its whole remaining delay.
        """
        usable = (self.budget is not None and hasattr(signal, "setitimer")
                  and threading.current_thread() is threading.main_thread())
        if not usable:
            yield
            return
        assert self.budget is not None
        grace = self.budget + max(2.0, 0.5 * self.budget)

        def on_alarm(signum: int, frame: Any) -> None:
            raise self.exceeded()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, grace)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if old_delay:  # re-arm a timer someone else (pytest-timeout, an outer check) had set
                left = old_delay if nested else old_delay - self.elapsed
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), old_interval)


# -- per-setup data ---------------------------------------------------------------------------
@dataclass
class SetupData:
    """What every check of one setup shares: the fixed batches (on CPU, as the loader yields them)."""

    training: Training
    batch: Any
    eval_batch: Any = None
    models_seen: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    # The user's step raised this (its last traceback line) on a first probe: every check that ends
    # with the same error is blocked by the one that explains it (`blocker`: code, reason).
    step_error: Optional[str] = None
    probed: bool = False
    blocker: Optional[tuple[str, str]] = None
    # The first time budget a check of this setup ran past: the setup's other checks are blocked by
    # it instead of each waiting out the whole budget again on the same hang.
    timeout: Optional[BudgetExceeded] = None
    # Submodules the model factory returns on every call (a global backbone), saved before the first
    # check and restored after each (`shared.SharedModules`).
    shared: Any = None
    # The shared training runs (`record.Record`) by (seed, device, with update ratios): every check
    # that only observes training reads them, so pytest items of one setup train once per seed.
    records: dict[tuple[int, str, bool], Any] = field(default_factory=dict)
    # The pass over each split ("data", "eval_data") that the data checks share (`datapass.Pass`).
    passes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, training: Training, seed: int, clock: Optional[Clock] = None) -> SetupData:
        """Take the first batch of ``data`` (and ``eval_data``), capped at ``batch_size`` samples."""
        clock = clock or Clock(None)
        with isolated(seed):
            clock.where = "iterating `data` for its first batch"
            batch = first_batch(training.data, "data", training.batch_size, training.inputs)
            clock.check()
            evals = None
            if training.eval_data is not None:
                clock.where = "iterating `eval_data` for its first batch"
                evals = first_batch(training.eval_data, "eval_data", training.batch_size, training.inputs)
                clock.check()
        return cls(training, batch, evals)

    def with_batch(self, batch: Any) -> SetupData:
        """Return the same setup over another fixed training batch (zeroed inputs, say)."""
        return SetupData(self.training, batch, self.eval_batch, self.models_seen)

    def part(self, role: str, evaluation: bool = False) -> Any:
        """Return the ``role`` ("inputs"/"targets") of the fixed batch, or raise `MissingField`."""
        batch = self.eval_batch if evaluation and self.eval_batch is not None else self.batch
        return find(batch, getattr(self.training, role), role)

    @property
    def inputs(self) -> torch.Tensor:
        """Return the inputs tensor of the fixed batch (the first floating one of a structure)."""
        return tensor_part(self.part("inputs"), "inputs")

    @property
    def targets(self) -> torch.Tensor:
        """Return the targets tensor of the fixed batch."""
        return tensor_part(self.part("targets"), "targets")


def error_line(text: Optional[str]) -> Optional[str]:
    """Return the last line of a formatted traceback (``Type: message``), the signature of an error."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def find(batch: Any, spec: Any, role: str) -> Any:
    """Locate ``role`` in ``batch``; a declared function that raises reads as a missing field."""
    try:
        return tb.locate(batch, spec, role)
    except tb.MissingField:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's `inputs=`/`targets=` function
        raise tb.MissingField(f"`Training({role}=...)` raised {type(exc).__name__}: {exc}") from exc


def tensor_part(part: Any, role: str) -> torch.Tensor:
    """Return ``part`` as one batched tensor (the first, floating first for inputs), or raise `MissingField`."""
    t = tb.first_tensor(part, floating=role == "inputs")
    if t is None:
        raise tb.MissingField(f"the {role} of the batch hold no batched tensor; declare `Training({role}=...)`")
    return t


def first_batch(data: Any, where: str, cap: int, inputs: Any = None) -> Any:
    """Return the first batch of ``data`` as it is yielded, detached on the CPU and cut to ``cap`` samples."""
    try:
        batch = next(iter(data))
    except StopIteration:
        raise SetupError(f"`{where}` is empty: it must yield at least one batch") from None
    except Exception as exc:  # noqa: BLE001
        raise UserCodeError(f"iterating `{where}`", exc) from exc
    if not tb.leaves(batch):
        raise SetupError(f"`{where}` yields a {tb.describe(batch)} holding no torch.Tensor; "
                         "traincheck needs batches of tensors (a DataLoader's output)")
    if any(t.is_meta for t in tb.leaves(batch)):
        raise SetupError(f"`{where}` yields tensors on the meta device, which hold no data; "
                         "traincheck needs batches with real values")
    try:
        hint = find(batch, inputs, "inputs")
    except tb.MissingField:
        hint = None
    return tb.cut(batch, tb.batch_size(batch, hint), cap)


# -- the harness ------------------------------------------------------------------------------
class Harness:
    """Give a check fresh objects, the fixed batch and instrumented sessions for one setup."""

    def __init__(self, data: SetupData, *, seed: int = 0, device: Optional[str] = None,
                 budget: Optional[float] = None) -> None:
        self.data, self.training, self.seed = data, data.training, seed
        self.device = torch.device(device or data.training.device or "cpu")
        self.clock = Clock(budget)
        # Set by the runner only for a TensorBoard log: the series check fills it from the shared run.
        self.series: Optional[dict[str, list[float]]] = None
        self._batch: Any = None  # the fixed batch, on the device

    @property
    def has_user_step(self) -> bool:
        """True when the user declared `step` or `train_epoch`."""
        return self.training.has_user_step

    def batch(self) -> Any:
        """Return a fresh copy of the fixed training batch on the device, shaped as the loader yields it."""
        if self._batch is None:  # copied to the device once, cloned there after (no host transfer per step)
            self._batch = tb.to_device(self.data.batch, self.device)
        return tb.to_device(self._batch, self.device)

    def record(self, steps: int = 0, *, ratios: bool = False, raise_error: bool = True) -> Any:
        """Return the shared training run of this setup and seed (run once, then read by every check).

        Re-raises the user's error (or the budget error) when the run stopped before ``steps``
        steps; ``ratios`` asks for a run that measured update ratios at every step (TensorBoard).
        """
        from pytest_traincheck.harness.record import build

        key = (self.seed, str(self.device), ratios)
        rec = self.data.records.get(key) or (None if ratios else self.data.records.get((key[0], key[1], True)))
        if rec is None:
            rec = self.data.records[key] = build(self, ratios=ratios)
        if raise_error:
            rec.need(steps)
        return rec

    def eval_batch(self) -> Any:
        """Return the fixed evaluation batch (the training batch when no `eval_data`)."""
        if self.data.eval_batch is None:
            return self.batch()
        return tb.to_device(self.data.eval_batch, self.device)

    def inputs(self, batch: Any = None) -> Any:
        """Return the inputs part of ``batch`` (a fresh training batch by default); `MissingField` if none."""
        return find(self.batch() if batch is None else batch, self.training.inputs, "inputs")

    def targets(self, batch: Any = None) -> Any:
        """Return the targets part of ``batch`` (a fresh training batch by default); `MissingField` if none."""
        return find(self.batch() if batch is None else batch, self.training.targets, "targets")

    def input_tensor(self, batch: Any = None) -> torch.Tensor:
        """Return the inputs as one batched tensor (the first floating one of a structure)."""
        return tensor_part(self.inputs(batch), "inputs")

    def target_tensor(self, batch: Any = None) -> torch.Tensor:
        """Return the targets as one batched tensor."""
        return tensor_part(self.targets(batch), "targets")

    def forward(self, model: nn.Module, batch: Any = None) -> Any:
        """Call ``model`` on the inputs: ``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple."""
        if isinstance(model, (nn.ModuleDict, nn.ModuleList)):
            raise MissingField("the model is a dict or list of models (a GAN): only the step knows how to call "
                               "them, so checks that call the model themselves are skipped")
        if not has_forward(model):
            raise MissingField(NO_FORWARD)
        part = self.inputs(batch)
        if isinstance(part, collections.abc.Mapping):
            return call_user("the model's forward", lambda: model(**part))
        if isinstance(part, (tuple, list)) and not hasattr(part, "_fields"):
            return call_user("the model's forward", model, *part)
        return call_user("the model's forward", model, part)

    def loss(self, model: nn.Module, batch: Any = None) -> Any:
        """Return the textbook loss of ``model`` on ``batch``: the output's own ``.loss``, else ``loss_fn``."""
        batch = self.batch() if batch is None else batch
        out = self.forward(model, batch)
        own = tb.loss_of(out) if not isinstance(out, torch.Tensor) or self.training.loss_fn is None else None
        if own is not None:
            return own
        if self.training.loss_fn is None:
            raise SetupError("the model's output carries no `.loss` and no `loss_fn` is declared")
        prediction = tb.logits_of(out)
        return call_user("the `loss_fn`", self.training.loss_fn, prediction, self.targets(batch))

    def model(self) -> nn.Module:
        """Build a fresh model on the device (a dict or list of models becomes a ModuleDict/ModuleList)."""
        model = self.built_model()
        if self.data.shared is not None:  # a global backbone: this model trains its own copy
            model = self.data.shared.copied_into(model)
        return model.to(self.device).train()

    def built_model(self) -> nn.Module:
        """Return the model factory's result, checked, as it returned it (not moved, mode untouched)."""
        self.clock.where = "the `model` factory"
        model = as_module(call_user("the `model` factory", self.training.model))
        for part in {id(m): m for m in [model, *model.children()]}.values():
            if part in self.data.models_seen:
                raise SetupError("the `model` factory returned the same nn.Module object twice; checks need a fresh "
                                 "model each call: build it inside the factory, e.g. `model=lambda: Net()`")
        on_meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
        if on_meta is not None:  # `.to()` would raise deep inside torch: say what is wrong instead
            raise SetupError(f"the `model` factory returned a model on the meta device (`{on_meta}` holds no "
                             "data); build it with real weights, e.g. load or initialize them before returning "
                             "(`model.to_empty(device='cpu')` then `reset_parameters()` or `load_state_dict`)")
        self.data.models_seen.add(model)
        if isinstance(model, (nn.ModuleDict, nn.ModuleList)):
            for part in model.children():
                self.data.models_seen.add(part)
        return model

    def optimizer(self, model: nn.Module) -> Any:
        """Build fresh optimizers: one over ``model``'s parameters, or a dict/list matching the models."""
        self.clock.where = "the `optimizer` factory"
        factories = self.training.optimizer
        if callable(factories):
            # An adapter's factory (a LightningModule's configure_optimizers) takes the model itself.
            given = model if getattr(factories, "__traincheck_takes_model__", False) else model.parameters()
            built = self._one_optimizer("the `optimizer` factory", factories, given, model)
            return built
        keyed = factories.items() if isinstance(factories, dict) else enumerate(factories)
        built = {}
        for key, factory in keyed:
            part = _part(model, key)
            where = f"the `optimizer[{key!r}]` factory"
            built[key] = self._one_optimizer(where, factory, part.parameters() if part is not model else model, part)
        return built if isinstance(factories, dict) else list(built.values())

    def scheduler(self, optimizer: Any) -> Any:
        """Build fresh schedulers from `Training(scheduler=...)`: one, or a dict/list matching the optimizers."""
        factory = self.training.scheduler
        if factory is None:
            return None
        self.clock.where = "the `scheduler` factory"
        if callable(factory):
            return call_user("the `scheduler` factory", factory, optimizer)
        keyed = factory.items() if isinstance(factory, dict) else enumerate(factory)
        built = {k: call_user(f"the `scheduler[{k!r}]` factory", f, optimizer[k]) for k, f in keyed}
        return built if isinstance(factory, dict) else list(built.values())

    @staticmethod
    def _one_optimizer(where: str, factory: Any, params: Any, model: nn.Module) -> Any:
        opt = call_user(where, factory, params)
        if isinstance(opt, list) and getattr(factory, "__traincheck_takes_model__", False):
            for one in opt:  # several optimizers from one adapter factory (configure_optimizers)
                Harness._one_optimizer(where, lambda p, o=one: o, params, model)
            return opt
        if not hasattr(opt, "param_groups") or not hasattr(opt, "register_step_pre_hook"):
            raise SetupError(f"{where} returned {type(opt).__name__}, not a torch.optim.Optimizer")
        model_ids = {id(p) for p in model.parameters()}
        if model_ids and not any(id(p) in model_ids for g in opt.param_groups for p in g["params"]):
            raise SetupError(f"{where} returned an optimizer over other parameters than the "
                             "model it was given; build it from the `params` argument, e.g. "
                             "`optimizer=lambda params: torch.optim.SGD(params, lr=0.1)`")
        return opt

    @contextlib.contextmanager
    def session(self, *, track_updates: bool = False) -> Iterator[Session]:
        """Yield a `Session` (fresh model + optimizers, one `Trace` each); remove every hook after."""
        from pytest_traincheck.harness.session import Session

        model = self.model()
        optimizer = self.optimizer(model)
        traces = self.traces(model, optimizer, track_updates=track_updates)
        try:
            session = Session(self, model, optimizer, traces)
            session.scheduler = self.scheduler(optimizer)
            yield session
        finally:
            for trace in reversed(list(traces.values())):
                try:
                    trace.settle()  # values still on the device (a last backward's norms, loss values)
                finally:
                    trace.close()

    def traces(self, model: nn.Module, optimizer: Any, **options: Any) -> dict[str, Trace]:
        """Return one `Trace` per optimizer, by name; several optimizers each watch their own model."""
        traces: dict[str, Trace] = {}
        try:
            for key, opt in named_optimizers(optimizer).items():
                part = _part(model, key) if not isinstance(optimizer, Optimizer) else model
                trace = Trace(part, opt, self.clock.check, **options)
                if part is not model:  # name parameters as the whole model does: `generator.fc.weight`
                    trace.names = {id(p): n for n, p in model.named_parameters() if id(p) in trace.names}
                traces[key] = trace
        except BaseException:
            for trace in traces.values():
                trace.close()
            raise
        return traces

Optimizer = torch.optim.Optimizer
SEVERAL_OPTIMIZERS = ("several optimizers with their own objectives (a GAN): the loss the step returns is not one "
                      "objective they all minimize, so one batch is not expected to be fit")


NO_FORWARD = ("the model defines no forward() (a LightningModule that calls its layers in training_step): only the "
              "step knows how to call it, so checks that call the model themselves are skipped")


def has_forward(model: Any) -> bool:
    """True when ``model``'s class (or ``model``, a class) defines forward() itself, not only a placeholder."""
    for cls in (model if isinstance(model, type) else type(model)).__mro__:
        if "forward" in vars(cls):
            return cls is not nn.Module and not cls.__module__.startswith(("lightning.", "pytorch_lightning."))
    return False


def several_optimizers(training: Training) -> bool:
    """True when the setup declares a dict or list of optimizer factories."""
    return isinstance(training.optimizer, (dict, list, tuple))


def as_module(model: Any) -> nn.Module:
    """Return ``model`` as one module: a dict of models as an nn.ModuleDict, a list as an nn.ModuleList."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, dict) and model and all(isinstance(m, nn.Module) for m in model.values()):
        return nn.ModuleDict({str(k): m for k, m in model.items()})
    if isinstance(model, (list, tuple)) and model and all(isinstance(m, nn.Module) for m in model):
        return nn.ModuleList(model)
    raise SetupError(f"the `model` factory returned {type(model).__name__}, not an nn.Module "
                     "(or a dict or list of them)")


def _part(model: nn.Module, key: Any) -> nn.Module:
    """Return the model matching an optimizer's key (a ModuleDict key, a ModuleList index), else the model."""
    if isinstance(model, nn.ModuleDict) and str(key) in model:
        return model[str(key)]
    if isinstance(model, nn.ModuleList) and isinstance(key, int) and 0 <= key < len(model):
        return model[key]
    return model


def named_optimizers(optimizer: Any) -> dict[str, Any]:
    """Return the optimizers by name: ``{"optimizer": opt}`` for one, their keys or indices for several."""
    if isinstance(optimizer, dict):
        return {str(k): v for k, v in optimizer.items()}
    if isinstance(optimizer, (list, tuple)):
        return {f"optimizer[{i}]": v for i, v in enumerate(optimizer)}
    return {"optimizer": optimizer}


def optimizer_state(optimizer: Any) -> Any:
    """Return the state_dict of one optimizer, or of each of several (same container)."""
    if isinstance(optimizer, dict):
        return {k: v.state_dict() for k, v in optimizer.items()}
    if isinstance(optimizer, (list, tuple)):
        return [v.state_dict() for v in optimizer]
    return optimizer.state_dict()


def load_optimizer_state(optimizer: Any, state: Any) -> None:
    """Load what `optimizer_state` returned into fresh optimizers."""
    if isinstance(optimizer, dict):
        for k, v in optimizer.items():
            v.load_state_dict(state[k])
    elif isinstance(optimizer, (list, tuple)):
        for v, sd in zip(optimizer, state):
            v.load_state_dict(sd)
    else:
        optimizer.load_state_dict(state)


def finite(value: Optional[float]) -> bool:
    """True for a real, finite number."""
    return value is not None and math.isfinite(value)

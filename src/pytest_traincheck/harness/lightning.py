"""Run a LightningModule's own hooks through the checks, without a Lightning `Trainer`.

`training_step`, `validation_step` and `configure_optimizers` are called the way
Lightning's loop calls them: for automatic optimization the adapter zeroes the
gradients, calls `training_step`, runs backward on the loss it returns, steps the
optimizer and then the schedulers whose interval is "step" (each `frequency`
batches; with `accumulate=k`, as Lightning's `accumulate_grad_batches`, the loss
is divided by k and the optimizer steps every k batches); every
`len(train_dataloader)` calls an epoch ends: `on_train_epoch_end` runs, then the
schedulers whose interval is "epoch" (the default). For manual optimization
(`self.automatic_optimization = False`, a GAN) `training_step` does all of that
itself through `self.optimizers()`, `self.manual_backward()` and
`self.lr_schedulers()`, which the adapter answers, and Lightning steps no
scheduler itself (`on_train_epoch_end` still runs at each epoch end). Lightning
is never imported: any module with these methods works.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness.spec import SetupError

__all__ = ["from_lightning", "is_lightning"]

# optimizer -> the `_Scheduled` configs configure_optimizers paired with it (several per optimizer allowed)
_SCHEDULERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# module -> what it logged with self.log (a ReduceLROnPlateau monitors one of these values)
_LOGGED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _Scheduled:
    """One scheduler config of configure_optimizers: Lightning's "interval", "frequency" and "monitor"."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: Optional[str] = None

    @classmethod
    def of(cls, entry: Any) -> _Scheduled:
        """Read a bare scheduler or Lightning's dict form."""
        if not isinstance(entry, dict):
            return cls(entry)
        if "scheduler" not in entry:
            raise SetupError("a scheduler dict from configure_optimizers() has no 'scheduler' key")
        interval = entry.get("interval", "epoch")
        if interval not in ("epoch", "step"):
            raise SetupError(f"configure_optimizers(): scheduler interval must be 'epoch' or 'step', got {interval!r}")
        frequency = entry.get("frequency", 1)
        if not isinstance(frequency, int) or frequency < 1:
            raise SetupError(f"configure_optimizers(): scheduler frequency must be an int >= 1, got {frequency!r}")
        return cls(entry["scheduler"], interval, frequency, entry.get("monitor"))

    @property
    def plateau(self) -> bool:
        """True for ReduceLROnPlateau, which Lightning steps with the monitored value."""
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def advance(self, module: Any, index: int) -> None:
        """Step the scheduler when the 1-based ``index`` of its interval is a multiple of its frequency."""
        if (index + 1) % self.frequency:
            return
        if not self.plateau:
            self.scheduler.step()
            return
        value = _LOGGED.get(module, {}).get(self.monitor or "val_loss")
        if value is not None:  # Lightning skips (or refuses) a plateau step without its metric
            self.scheduler.step(float(value))


def _parse(config: Any) -> tuple[list[Any], list[_Scheduled]]:
    """Split what configure_optimizers returns into optimizers and scheduler configs."""
    if config is None:
        raise SetupError("configure_optimizers() returned None: traincheck needs an optimizer to check")
    if hasattr(config, "param_groups"):
        return [config], []
    if isinstance(config, dict):
        if "optimizer" not in config:
            raise SetupError("configure_optimizers() returned a dict without 'optimizer'")
        entry = config.get("lr_scheduler")
        return [config["optimizer"]], [] if entry is None else [_Scheduled.of(entry)]
    if isinstance(config, (list, tuple)):
        if len(config) == 2 and all(isinstance(c, (list, tuple)) for c in config):
            return list(config[0]), [_Scheduled.of(s) for s in config[1]]
        opts: list[Any] = []
        scheds: list[_Scheduled] = []
        for item in config:
            o, s = _parse(item)
            opts.extend(o)
            scheds.extend(s)
        return opts, scheds
    raise SetupError(f"configure_optimizers() returned {type(config).__name__}; expected an optimizer, a list, "
                     "a dict with 'optimizer' or (optimizers, schedulers)")


def _configure(module: Any) -> Any:
    """Build the module's optimizers (one, or a list) and remember their schedulers."""
    opts, scheds = _parse(module.configure_optimizers())
    for config in scheds:
        owner = getattr(config.scheduler, "optimizer", None)
        if owner is not None:
            _SCHEDULERS.setdefault(owner, []).append(config)
    _attach(module, opts)
    return opts[0] if len(opts) == 1 else opts


_configure.__traincheck_takes_model__ = True  # type: ignore[attr-defined]


def _configs(optimizer: Any) -> list[_Scheduled]:
    """Return the scheduler configs of ``optimizer`` (or of each of several), in configure order."""
    opts = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
    return [c for o in opts for c in _SCHEDULERS.get(o, [])]


def _schedulers(optimizer: Any) -> Any:
    """Return the schedulers configure_optimizers paired with ``optimizer`` (or each of several)."""
    found = [c.scheduler for c in _configs(optimizer)]
    if not found:
        return None
    return found[0] if len(found) == 1 else found


def _attach(module: Any, opts: list[Any]) -> None:
    """Answer the Trainer-backed calls a module makes from its hooks: optimizers, schedulers, logging."""
    logged: dict[str, Any] = {}
    _LOGGED[module] = logged

    def optimizers(use_pl_optimizer: bool = True) -> Any:
        return opts[0] if len(opts) == 1 else opts

    def lr_schedulers() -> Any:
        return _schedulers(opts if len(opts) > 1 else opts[0])

    def manual_backward(loss: Any, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)

    def log(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
            logged[name] = value.detach() if isinstance(value, torch.Tensor) else value  # read when needed

    def log_dict(values: Any, *args: Any, **kwargs: Any) -> None:
        for name, value in dict(values).items():
            log(name, value)

    for name, fn in (("optimizers", optimizers), ("lr_schedulers", lr_schedulers),
                     ("manual_backward", manual_backward), ("log", log), ("log_dict", log_dict)):
        object.__setattr__(module, name, fn)


def _loss(out: Any) -> Any:
    loss = tb.loss_of(out)
    if loss is None:
        raise SetupError(f"training_step returned {type(out).__name__}; with automatic optimization it must "
                         "return the loss (a tensor or a dict with 'loss')")
    return loss


class _Loop:
    """Lightning's fit loop over the harness's batches: one call per batch, an epoch every `epoch_steps` calls.

    ``epoch_steps`` is the length of the training loader (None when it has no length: the epoch
    then never ends within a check). At each epoch end the module's ``on_train_epoch_end`` runs,
    then, with automatic optimization, the schedulers whose interval is "epoch", as Lightning does;
    with manual optimization Lightning steps no scheduler, so neither does the adapter.
    """

    def __init__(self, manual: bool, epoch_steps: Optional[int], accumulate: int = 1) -> None:
        self.manual, self.epoch_steps, self.accumulate = manual, epoch_steps, accumulate
        self.hook_needs_trainer: Optional[str] = None  # why on_train_epoch_end could not run without a Trainer

    def position(self, step_index: int) -> tuple[int, int]:
        """Return (epoch, batch index within it) of the 0-based call ``step_index``."""
        if not self.epoch_steps:
            return 0, step_index
        return divmod(step_index, self.epoch_steps)

    def automatic(self, module: Any, batch: Any, optimizer: Any, loss_fn: Any, step_index: int = 0) -> Any:
        """One automatic-optimization step, in Lightning's order."""
        if isinstance(optimizer, list):
            raise SetupError("configure_optimizers() returned several optimizers: Lightning needs "
                             "`self.automatic_optimization = False` (manual optimization) for that")
        epoch, batch_idx = self.position(step_index)
        k = self.accumulate  # Lightning's accumulate_grad_batches: `Training.from_lightning(..., accumulate=k)`
        last_of_epoch = bool(self.epoch_steps) and batch_idx == (self.epoch_steps or 0) - 1
        if batch_idx % k == 0:  # the first batch of an accumulation window
            optimizer.zero_grad()
        loss = _loss(module.training_step(batch, batch_idx))
        (loss / k if k > 1 else loss).backward()
        if (batch_idx + 1) % k == 0 or last_of_epoch:  # an epoch's end steps a partial window too
            optimizer.step()
            for config in _configs(optimizer):
                if config.interval == "step":
                    config.advance(module, batch_idx)  # Lightning counts `frequency` in batches, not updates
        self._epoch_boundary(module, optimizer, step_index)
        return loss

    def manual_step(self, module: Any, batch: Any, optimizer: Any, loss_fn: Any, scheduler: Any = None,
                    step_index: int = 0) -> Any:
        """One manual-optimization step: training_step steps its own optimizers and schedulers."""
        out = module.training_step(batch, self.position(step_index)[1])
        loss = tb.loss_of(out)
        self._epoch_boundary(module, optimizer, step_index)
        return loss if loss is not None else torch.zeros(())

    def _epoch_boundary(self, module: Any, optimizer: Any, step_index: int) -> None:
        epoch, batch_idx = self.position(step_index)
        if self.epoch_steps and batch_idx == self.epoch_steps - 1:
            self.end_epoch(module, optimizer, epoch)

    def end_epoch(self, module: Any, optimizer: Any, epoch: int = 0) -> None:
        """End training epoch ``epoch`` as Lightning does: on_train_epoch_end, then the "epoch" schedulers."""
        if _overrides(module, "on_train_epoch_end"):
            try:
                module.on_train_epoch_end()
            except RuntimeError as exc:  # `self.trainer` (callback_metrics, current_epoch): no Trainer here
                if "attached to a `Trainer`" not in str(exc):
                    raise
                self.hook_needs_trainer = str(exc)
        if not self.manual:
            for config in _configs(optimizer):
                if config.interval == "epoch":
                    config.advance(module, epoch)


def _evaluate(module: Any, loader: Any) -> Any:
    """Run validation_step over ``loader`` as Lightning's validation loop does (eval mode, no grad)."""
    module.eval()
    outputs = []
    with torch.no_grad():
        for index, batch in enumerate(loader):
            outputs.append(module.validation_step(batch, index))
    module.train()
    return outputs


def from_lightning(module_factory: Callable[[], Any], *, datamodule: Any = None, train_dataloader: Any = None,
                   val_dataloader: Any = None, name: Optional[str] = None, **fields: Any) -> Any:
    """Return a `Training` running the module's training_step, validation_step and configure_optimizers."""
    from pytest_traincheck.harness.spec import Training

    probe = module_factory()
    for method in ("training_step", "configure_optimizers"):
        if not callable(getattr(probe, method, None)):
            raise SetupError(f"{type(probe).__name__} has no `{method}`: from_lightning needs a LightningModule")
    if datamodule is not None:
        if callable(getattr(datamodule, "prepare_data", None)):
            datamodule.prepare_data()
        if callable(getattr(datamodule, "setup", None)):
            datamodule.setup("fit")
        train_dataloader = train_dataloader or datamodule.train_dataloader()
        if val_dataloader is None and callable(getattr(datamodule, "val_dataloader", None)):
            val_dataloader = datamodule.val_dataloader()
    if train_dataloader is None and _overrides(probe, "train_dataloader"):
        train_dataloader = probe.train_dataloader()
    if train_dataloader is None:
        raise SetupError("from_lightning needs training data: pass `datamodule=` or `train_dataloader=`")
    manual = getattr(probe, "automatic_optimization", True) is False
    validates = _overrides(probe, "validation_step") and val_dataloader is not None
    fields.setdefault("scheduler", _schedulers)
    loop = _Loop(manual, _length(train_dataloader), fields.get("accumulate", 1))
    return Training(name=name or type(probe).__name__, model=module_factory, optimizer=_configure,
                    data=train_dataloader, eval_data=val_dataloader if validates else None,
                    step=loop.manual_step if manual else loop.automatic,
                    evaluate=_evaluate if validates else None, **fields)


def is_lightning(training: Any) -> bool:
    """True when ``training`` was declared with `Training.from_lightning` (its step is the adapter's loop)."""
    code = training.step if training.step is not None else training.train_epoch
    return isinstance(getattr(code, "__self__", None), _Loop)


def _length(loader: Any) -> Optional[int]:
    """Return the batches per epoch of ``loader`` (None when it has no length, e.g. an IterableDataset)."""
    try:
        n = len(loader)
    except TypeError:
        return None
    return n if isinstance(n, int) and n > 0 else None


def _overrides(module: Any, method: str) -> bool:
    """True when ``module``'s class defines ``method`` itself (not only Lightning's default hook)."""
    for cls in type(module).__mro__:
        if method in vars(cls):
            return not cls.__module__.startswith(("lightning.", "pytorch_lightning."))
    return False

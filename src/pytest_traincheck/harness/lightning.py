"""Run a LightningModule's own hooks through the checks, without a Lightning `Trainer`.

`training_step`, `validation_step` and `configure_optimizers` are called the way
Lightning's loop calls them: for automatic optimization the adapter zeroes the
gradients, calls `training_step`, runs backward on the loss it returns, steps the
optimizer and then the schedulers whose interval is "step"; for manual
optimization (`self.automatic_optimization = False`, a GAN) `training_step` does
all of that itself through `self.optimizers()`, `self.manual_backward()` and
`self.lr_schedulers()`, which the adapter answers. Lightning is never imported:
any module with these methods works.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Optional

import torch

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness.spec import SetupError

__all__ = ["from_lightning"]

# optimizer -> (scheduler, interval) from configure_optimizers, for the step and the scheduler factory
_SCHEDULERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _parse(config: Any) -> tuple[list[Any], list[tuple[Any, str]]]:
    """Split what configure_optimizers returns into optimizers and (scheduler, interval) pairs."""
    if config is None:
        raise SetupError("configure_optimizers() returned None: traincheck needs an optimizer to check")
    if hasattr(config, "param_groups"):
        return [config], []
    if isinstance(config, dict):
        scheds = []
        entry = config.get("lr_scheduler")
        if isinstance(entry, dict):
            scheds.append((entry["scheduler"], entry.get("interval", "epoch")))
        elif entry is not None:
            scheds.append((entry, "epoch"))
        return [config["optimizer"]], scheds
    if isinstance(config, (list, tuple)):
        if len(config) == 2 and all(isinstance(c, (list, tuple)) for c in config):
            opts, scheds = list(config[0]), []
            for s in config[1]:
                scheds.append((s["scheduler"], s.get("interval", "epoch")) if isinstance(s, dict) else (s, "epoch"))
            return opts, scheds
        opts, scheds = [], []
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
    for sched, interval in scheds:
        owner = getattr(sched, "optimizer", None)
        if owner is not None:
            _SCHEDULERS[owner] = (sched, interval)
    _attach(module, opts)
    return opts[0] if len(opts) == 1 else opts


_configure.__traincheck_takes_model__ = True  # type: ignore[attr-defined]


def _schedulers(optimizer: Any) -> Any:
    """Return the schedulers configure_optimizers paired with ``optimizer`` (or each of several)."""
    opts = optimizer if isinstance(optimizer, list) else [optimizer]
    found = [_SCHEDULERS[o][0] for o in opts if o in _SCHEDULERS]
    if not found:
        return None
    return found[0] if len(found) == 1 else found


def _attach(module: Any, opts: list[Any]) -> None:
    """Answer the Trainer-backed calls a module makes from its hooks: optimizers, schedulers, logging."""
    def optimizers(use_pl_optimizer: bool = True) -> Any:
        return opts[0] if len(opts) == 1 else opts

    def lr_schedulers() -> Any:
        return _schedulers(opts if len(opts) > 1 else opts[0])

    def manual_backward(loss: Any, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)

    for name, fn in (("optimizers", optimizers), ("lr_schedulers", lr_schedulers),
                     ("manual_backward", manual_backward), ("log", _ignore), ("log_dict", _ignore)):
        object.__setattr__(module, name, fn)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def _loss(out: Any) -> Any:
    loss = tb.loss_of(out)
    if loss is None:
        raise SetupError(f"training_step returned {type(out).__name__}; with automatic optimization it must "
                         "return the loss (a tensor or a dict with 'loss')")
    return loss


def _automatic_step(module: Any, batch: Any, optimizer: Any, loss_fn: Any, step_index: int = 0) -> Any:
    """One automatic-optimization step, in Lightning's order."""
    if isinstance(optimizer, list):
        raise SetupError("configure_optimizers() returned several optimizers: Lightning needs "
                         "`self.automatic_optimization = False` (manual optimization) for that")
    optimizer.zero_grad()
    loss = _loss(module.training_step(batch, step_index))
    loss.backward()
    optimizer.step()
    entry = _SCHEDULERS.get(optimizer)
    if entry is not None and entry[1] == "step":
        entry[0].step()
    return loss


def _manual_step(module: Any, batch: Any, optimizer: Any, loss_fn: Any, scheduler: Any = None,
                 step_index: int = 0) -> Any:
    """One manual-optimization step: training_step steps its own optimizers and schedulers."""
    out = module.training_step(batch, step_index)
    loss = tb.loss_of(out)
    return loss if loss is not None else torch.zeros(())


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
    return Training(name=name or type(probe).__name__, model=module_factory, optimizer=_configure,
                    data=train_dataloader, eval_data=val_dataloader if validates else None,
                    step=_manual_step if manual else _automatic_step,
                    evaluate=_evaluate if validates else None, **fields)


def _overrides(module: Any, method: str) -> bool:
    """True when ``module``'s class defines ``method`` itself (not only Lightning's default hook)."""
    for cls in type(module).__mro__:
        if method in vars(cls):
            return not cls.__module__.startswith(("lightning.", "pytorch_lightning."))
    return False

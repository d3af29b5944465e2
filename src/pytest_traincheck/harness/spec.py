"""`Training`: the one declaration of a training setup that the dynamic checks run."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

__all__ = ["SetupError", "Training", "TASKS"]

TASKS = ("auto", "classification", "binary", "regression")

# Keyword-only construction keeps declarations readable and lets fields be added later.
_KW: dict[str, Any] = {"kw_only": True} if sys.version_info >= (3, 10) else {}


class SetupError(Exception):
    """The training setup itself is unusable (bad declaration, bad batches)."""


@dataclass(**_KW)
class Training:
    """Declare a training setup: factories for fresh objects, data and the user's own step.

    ``model`` and ``optimizer`` are factories because every check starts from fresh
    objects. Give ``step`` (one batch) or ``train_epoch`` (one loader) to check your
    real training code; without either, a textbook step is used and only the model,
    loss and optimizer are checked.
    """

    name: str
    model: Callable[[], Any]
    optimizer: Callable[[Iterable[Any]], Any]
    data: Iterable[Any]
    loss_fn: Optional[Callable[..., Any]] = None  # None: the model computes its loss (`out.loss`)
    eval_data: Optional[Iterable[Any]] = None
    step: Optional[Callable[..., Any]] = None
    train_epoch: Optional[Callable[..., Any]] = None
    evaluate: Optional[Callable[..., Any]] = None
    # `save_checkpoint(model, optimizer, path)` / `load_checkpoint(model, optimizer, path)`: TRN503 resumes
    # through them; without them it round-trips both state_dicts with torch.save/torch.load.
    save_checkpoint: Optional[Callable[..., Any]] = None
    load_checkpoint: Optional[Callable[..., Any]] = None
    num_classes: Optional[int] = None
    task: str = "auto"
    device: Optional[str] = None
    clip: Optional[bool] = None  # True: expect clipping (TRN105) even without recurrent layers
    overfit_steps: int = 100
    batch_size: int = 16
    options: dict[str, Any] = field(default_factory=dict)  # per-check knobs, keyed by code
    # Distributed (TRN7xx): the number of ranks, and per-rank loaders built inside each rank once its
    # process group exists (so a DistributedSampler can read rank and world size): `rank_data(epoch)` is
    # the rank's training loader for that epoch, `rank_eval_data()` its evaluation loader.
    world_size: int = 1
    rank_data: Optional[Callable[[int], Iterable[Any]]] = None
    rank_eval_data: Optional[Callable[[], Iterable[Any]]] = None
    # -- real-project shapes (batches, outputs, optimizers, schedulers, accumulation) ----------
    # Where checks find the inputs / targets of a batch: a key, an index, or a function of the
    # batch; None finds the usual names (input_ids, pixel_values, x...; labels, y...) or positions 0/1.
    inputs: Any = None
    targets: Any = None
    # `scheduler(optimizer)` (or a dict/list matching several optimizers) builds a fresh LR scheduler;
    # a step or train_epoch that takes a `scheduler` argument gets it (TRN108, TRN503 check it).
    scheduler: Any = None
    # The step is called `accumulate` times per optimizer update (gradient accumulation); a step that
    # takes `step_index` gets the call's index (0, 1, ...) to know when to step.
    accumulate: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `SetupError` naming the first field that cannot work."""
        where = f"Training({self.name!r})" if isinstance(self.name, str) else "Training"
        if not isinstance(self.name, str) or not self.name.strip():
            raise SetupError(f"{where}: `name` must be a non-empty string, got {self.name!r}")
        if any(c in self.name for c in ":[]\n"):
            raise SetupError(f"{where}: `name` is used in pytest item ids; avoid ':', '[', ']' and newlines")
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise SetupError(f"{where}: `loss_fn` must be callable or None, got {type(self.loss_fn).__name__}")
        several = self.optimizer if isinstance(self.optimizer, (dict, list, tuple)) else None
        if several is not None:
            values = list(several.values()) if isinstance(several, dict) else list(several)
            if not values or not all(callable(f) and not _looks_like_optimizer(f) for f in values):
                raise SetupError(f"{where}: several optimizers are a dict or list of factories taking parameters, "
                                 "e.g. `optimizer={'generator': lambda p: Adam(p), 'discriminator': lambda p: Adam(p)}`")
        for attr in ("model",) if several is not None else ("model", "optimizer"):
            if not callable(getattr(self, attr)):
                raise SetupError(f"{where}: `{attr}` must be callable, got {type(getattr(self, attr)).__name__}")
        if _looks_like_module(self.model):
            raise SetupError(f"{where}: `model` must be a factory returning a fresh nn.Module "
                             "(for example `model=lambda: Net()` or `model=Net`), not a module instance")
        if _looks_like_optimizer(self.optimizer):
            raise SetupError(f"{where}: `optimizer` must be a factory taking parameters, "
                             "for example `optimizer=lambda params: torch.optim.SGD(params, lr=0.1)`")
        for attr in ("step", "train_epoch", "evaluate", "save_checkpoint", "load_checkpoint", "rank_data",
                     "rank_eval_data"):
            value = getattr(self, attr)
            if value is not None and not callable(value):
                raise SetupError(f"{where}: `{attr}` must be callable or None")
        if self.step is not None and self.train_epoch is not None:
            raise SetupError(f"{where}: give either `step` (per batch) or `train_epoch` (per loader), not both")
        if (self.save_checkpoint is None) != (self.load_checkpoint is None):
            raise SetupError(f"{where}: give both `save_checkpoint` and `load_checkpoint` (or neither): "
                             "a resume is checked by saving with one and loading with the other")
        if self.data is None or isinstance(self.data, (str, bytes)):
            raise SetupError(f"{where}: `data` must be a DataLoader or an iterable of batches")
        for attr in ("inputs", "targets"):
            value = getattr(self, attr)
            if not (value is None or callable(value) or isinstance(value, (str, int))) or isinstance(value, bool):
                raise SetupError(f"{where}: `{attr}` must be a key, an index or a function of the batch, "
                                 f"got {type(value).__name__}")
        if self.task not in TASKS:
            raise SetupError(f"{where}: `task` must be one of {', '.join(TASKS)}; got {self.task!r}")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise SetupError(f"{where}: `num_classes` must be a positive int, got {self.num_classes!r}")
        several = self.scheduler if isinstance(self.scheduler, (dict, list, tuple)) else None
        if self.scheduler is not None and not (callable(self.scheduler) or several):
            raise SetupError(f"{where}: `scheduler` must be a factory taking the optimizer, e.g. "
                             "`scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 10)`")
        if several is not None and not all(callable(f) for f in (several.values() if isinstance(several, dict)
                                                                  else several)):
            raise SetupError(f"{where}: several schedulers are a dict or list of factories taking an optimizer")
        for attr, low in (("overfit_steps", 1), ("batch_size", 1), ("world_size", 1), ("accumulate", 1)):
            value = getattr(self, attr)
            if not isinstance(value, int) or value < low:
                raise SetupError(f"{where}: `{attr}` must be an int >= {low}, got {value!r}")

    @classmethod
    def from_lightning(cls, module_factory: Callable[[], Any], **kwargs: Any) -> Training:
        """Declare a LightningModule: its training_step, validation_step and configure_optimizers, no Trainer.

        Give ``datamodule=`` or ``train_dataloader=`` (and ``val_dataloader=``); other keywords are
        `Training` fields (``name`` defaults to the module's class name).
        """
        from pytest_traincheck.harness.lightning import from_lightning

        return from_lightning(module_factory, **kwargs)

    @property
    def has_user_step(self) -> bool:
        """True when the user's own training code (per batch or per epoch) is declared."""
        return self.step is not None or self.train_epoch is not None


def _looks_like_module(obj: Any) -> bool:
    # An nn.Module instance is callable too; its `parameters` method gives it away.
    return not isinstance(obj, type) and hasattr(obj, "parameters") and hasattr(obj, "state_dict")


def _looks_like_optimizer(obj: Any) -> bool:
    return not isinstance(obj, type) and hasattr(obj, "param_groups")


def as_trainings(value: Any, where: str) -> list[Training]:
    """Normalize one `Training` or an iterable of them, naming ``where`` in errors."""
    items = [value] if isinstance(value, Training) else value
    try:
        items = list(items)
    except TypeError:
        raise SetupError(f"{where} returned {type(value).__name__}; expected a Training or a list of them") from None
    bad = [type(t).__name__ for t in items if not isinstance(t, Training)]
    if bad:
        raise SetupError(f"{where} returned {bad[0]} items; expected pytest_traincheck.Training")
    names = [t.name for t in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SetupError(f"{where}: setup names must be unique; repeated: {', '.join(dupes)}")
    return items

"""Example models and functions shared by the train/eval mode checks (TRN301-TRN304)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex


def dropout_model() -> nn.Module:
    """Return an MLP with dropout and BatchNorm, whose forward depends on the mode."""
    return ex.MLP(dropout=0.5, batchnorm=True)


def eval_no_restore(model: nn.Module, loader: Any) -> float:
    """Evaluate in eval mode and leave it there (TRN301)."""
    model.eval()
    with torch.no_grad():
        return float(sum(int((model(x).argmax(1) == y).sum()) for x, y in loader))


def eval_in_train_mode(model: nn.Module, loader: Any) -> float:
    """Evaluate without model.eval() (TRN302)."""
    with torch.no_grad():
        return float(sum(int((model(x).argmax(1) == y).sum()) for x, y in loader))


def eval_with_grad(model: nn.Module, loader: Any) -> float:
    """Evaluate in eval mode, restoring it, but with gradient tracking on (TRN303)."""
    model.eval()
    total = float(sum(int((model(x).argmax(1) == y).sum()) for x, y in loader))
    model.train()
    return total


def eval_restoring_mode(model: nn.Module, loader: Any) -> float:
    """Evaluate under inference_mode and restore whatever mode the model was in."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        total = float(sum(int((model(x).argmax(1) == y).sum()) for x, y in loader))
    model.train(was_training)
    return total


def step_with_train(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    """A per-batch step that switches to train mode itself before its forward pass."""
    model.train()
    return ex.good_step(model, batch, optimizer, loss_fn)


def epoch_without_train(model: nn.Module, loader: Any, optimizer: Any, loss_fn: Any) -> None:
    """An epoch loop that trains in whatever mode the model was left in."""
    for batch in loader:
        ex.good_step(model, batch, optimizer, loss_fn)


def epoch_with_train(model: nn.Module, loader: Any, optimizer: Any, loss_fn: Any) -> None:
    """An epoch loop that calls `model.train()` at its top, as most training loops do."""
    model.train()
    epoch_without_train(model, loader, optimizer, loss_fn)


def setup(**overrides: Any) -> Any:
    """Return a correct setup with a mode-dependent model and a correct evaluate()."""
    fields: dict[str, Any] = dict(model=dropout_model, evaluate=ex.good_evaluate)
    fields.update(overrides)
    return ex.setup(**fields)

"""TRN109: backward() runs, but the loss's graph was cut off from the parameters."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness, UserCodeError
from pytest_traincheck.harness.trace import GraphCut

STEPS = 2


def _detach_rewrap(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    out = model(x).detach().requires_grad_()  # a new leaf: the model is no longer in the graph
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    return loss


def _item_rewrap(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    loss = torch.tensor(loss_fn(model(x), y).item(), requires_grad=True)
    loss.backward()
    optimizer.step()
    return loss


def _through_data(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x).data, y)  # `.data` drops the graph: backward() raises
    loss.backward()
    optimizer.step()
    return loss


def _forward_no_grad(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    with torch.no_grad():
        out = model(x)
    loss = loss_fn(out, y).requires_grad_()
    loss.backward()
    optimizer.step()
    return loss


def _frozen_backbone() -> nn.Module:
    model = ex.MLP()
    model.fc1.requires_grad_(False)  # a frozen layer is not a cut graph
    return model


def _log_softmax_nll(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    optimizer.zero_grad()
    loss = nn.functional.nll_loss(torch.log_softmax(model(x), dim=1), y)
    loss.backward()
    optimizer.step()
    return loss


class GraphCutBeforeLoss(Check):
    """Fail when backward() runs on a loss whose graph reaches none of the optimizer's parameters.

    ## What it measures
    Runs the user's step twice and, at each `backward()`, follows the loss's graph to see whether it
    reaches any parameter the optimizer updates; a forward hook records whether the model's output
    required grad, to tell a forward under `no_grad` from a cut between output and loss.

    ## Why it matters
    `.detach().requires_grad_()`, `torch.tensor(loss.item(), requires_grad=True)` or `.data` make a
    new leaf: `backward()` then runs without error but no parameter gets a gradient, and the model
    never learns while the loss is printed as usual.

    ## Thresholds
    Fails on any backward whose graph reaches none of the optimizer's trainable parameters. Frozen
    parameters (`requires_grad=False`) are not expected to be reached. Fixed; turn the check off with
    `--train-sanity-ignore TRN109` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Needs the user's own step. A backward that reaches only some of the parameters passes here; the
    unreached ones are TRN602's job.

    ## Example
    ```python
    out = model(x).detach().requires_grad_()
    loss = loss_fn(out, y)
    loss.backward()
    ```
    """

    CODE = "TRN109"
    NEEDS_STEP = True
    PASSING = (lambda: ex.setup(), lambda: ex.setup(model=_frozen_backbone),
               lambda: ex.setup(step=_log_softmax_nll))
    FAILING = (lambda: ex.setup(step=_detach_rewrap), lambda: ex.setup(step=_item_rewrap),
               lambda: ex.setup(step=_through_data), lambda: ex.setup(step=_forward_no_grad))

    def run(self, h: Harness) -> CheckResult:
        rec = h.record(raise_error=False)  # the shared run records every backward() and the graph it saw
        error: Optional[UserCodeError] = None
        if rec.error is not None and len(rec.losses) < STEPS:
            if not isinstance(rec.error, UserCodeError):
                raise rec.error
            error = rec.error  # a loss without a graph makes backward() raise: say why first
        outputs = [f.output_grad for f in rec.forwards if f.phase == "step" and f.output_grad is not None]
        trainable = set(rec.trainable)
        missing = [n for n in rec.optimized if n in trainable]
        if rec.cuts:
            return self._fail(rec.cuts[0], missing, outputs, error)
        if error is not None:
            raise error
        if not rec.backward_calls:
            return self.skipped("the training step never called backward()")
        return self.passed(f"{rec.backward_calls} backward() call(s) reached the parameters")

    def _fail(self, cut: GraphCut, missing: list[str], outputs: list[bool],
              error: Optional[UserCodeError]) -> CheckResult:
        shown = ", ".join(f"`{n}`" for n in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        if cut.kind == "no-grad":
            if outputs and not any(outputs):
                how = ("the model's output did not require grad: its forward ran under `torch.no_grad()` / "
                       "`inference_mode()` (or the parameters were frozen)")
            else:
                how = ("the model's output required grad but the loss does not: the graph was cut between them "
                       "by `.detach()`, `.data`, `.item()` or a `torch.no_grad()` block")
            what = "the loss passed to backward() has no graph"
        elif cut.kind == "leaf":
            what = "the loss passed to backward() is a leaf tensor"
            how = ("it was rebuilt from a value (`torch.tensor(loss.item(), requires_grad=True)`, "
                   "`loss.detach().requires_grad_()`), so backward() stops at it")
            if outputs and not any(outputs):
                how = ("the model's forward ran under `torch.no_grad()` and the loss was then made a leaf "
                       "with `requires_grad_()`, so backward() stops at it")
        else:
            shapes = ", ".join(str(s) for s in cut.foreign_shapes[:2])
            what = f"backward() reached only leaf tensor(s) of shape {shapes} that are not parameters"
            how = ("a tensor on the way to the loss (the model's output?) was detached and made a new leaf "
                   "(`.detach().requires_grad_()`, `.data`, `torch.tensor(...)`)")
        raised = f"; backward() raised {type(error.original).__name__}" if error is not None else ""
        return self.failed(f"at step {cut.step + 1}, {what}{raised}: {how}. None of the {len(missing)} trainable "
                           f"parameters ({shown}) got a gradient", step=cut.step + 1, cut=cut.kind,
                           params_without_grad=len(missing), first_param=missing[0] if missing else "")

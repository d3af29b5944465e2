"""Several optimizers and models: dicts and lists, each optimizer judged and named."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check, run_checks
from pytest_traincheck.harness.spec import SetupError


class TwoHeads(nn.Module):
    """A body and a head trained by two optimizers over one model."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(ex.FEATURES, 32), nn.ReLU())
        self.head = nn.Linear(32, ex.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _both(clear_head: bool = True) -> Any:
    def step(model: nn.Module, batch: Any, optimizers: list[Any], loss_fn: Any) -> Any:
        x, y = batch
        optimizers[0].zero_grad()
        if clear_head:
            optimizers[1].zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        for opt in optimizers:
            opt.step()
        return loss
    return step


# Several optimizers over one model: each factory receives the model and picks its part.
LIST = [lambda m: torch.optim.Adam(m.body.parameters(), lr=0.05), lambda m: torch.optim.SGD(m.head.parameters(), lr=0.1)]


def test_a_list_of_optimizers_over_one_model_is_clean() -> None:
    report = run_checks(ex.setup(model=TwoHeads, optimizer=LIST, step=_both()), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert "optimizer `optimizer[1]`" in report.get("TRN101").message


def test_the_optimizer_that_is_never_cleared_is_named() -> None:
    result = run_check("TRN101", prepare(ex.setup(model=TwoHeads, optimizer=LIST, step=_both(clear_head=False))))
    assert result.verdict is Verdict.FAIL and result.evidence["optimizer"] == "optimizer[1]"
    assert "`head.weight.grad`" in result.message


def test_parameters_in_no_optimizer_are_found_across_all_of_them() -> None:
    only_body = [LIST[0]]
    result = run_check("TRN602", prepare(ex.setup(model=TwoHeads, optimizer=only_body, step=_both())))
    assert result.verdict is Verdict.FAIL and "not in the optimizer" in result.message


@pytest.mark.parametrize(("optimizer", "match"), [
    ({}, "dict or list of factories"),
    ([torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)], "dict or list of factories"),
])
def test_bad_optimizer_collections_are_refused(optimizer: Any, match: str) -> None:
    with pytest.raises(SetupError, match=match):
        ex.setup(optimizer=optimizer)


def test_a_factory_returning_a_dict_of_models_gets_a_module_dict() -> None:
    seen: list[Any] = []

    def step(models: Any, batch: Any, optimizers: Any, loss_fn: Any) -> Any:
        seen.append((type(models).__name__, sorted(optimizers)))
        x, y = batch
        for opt in optimizers.values():
            opt.zero_grad()
        loss = loss_fn(models["b"](models["a"](x)), y)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        return loss

    training = ex.setup(model=lambda: {"a": nn.Linear(ex.FEATURES, 16), "b": nn.Linear(16, ex.CLASSES)},
                        optimizer={"a": ex.adam(), "b": ex.adam()}, step=step)
    assert run_check("TRN101", prepare(training)).verdict is Verdict.PASS
    assert seen[0] == ("ModuleDict", ["a", "b"])

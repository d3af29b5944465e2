"""Schedulers (TRN108, TRN503's resume) and gradient accumulation (`accumulate=k`, TRN101)."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from pytest_traincheck.checks.scheduler_step_misordered import _step_then, _warmup
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check, run_checks
from pytest_traincheck.harness.spec import SetupError

K = 4


def _accumulating(clear: bool = True) -> Any:
    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any, step_index: int) -> Any:
        x, y = batch
        loss = loss_fn(model(x), y)
        (loss / K).backward()
        if (step_index + 1) % K == 0:
            optimizer.step()
            if clear:
                optimizer.zero_grad()
        return loss
    return step


def test_correct_accumulation_is_clean_under_strict() -> None:
    report = run_checks(ex.setup(step=_accumulating(), accumulate=K), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN101").verdict is Verdict.PASS


def test_accumulation_that_never_clears_is_still_caught() -> None:
    result = run_check("TRN101", prepare(ex.setup(step=_accumulating(clear=False), accumulate=K)))
    assert result.verdict is Verdict.FAIL, result.describe()


def test_the_step_index_counts_calls_within_each_update() -> None:
    seen: list[int] = []

    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any, step_index: int) -> Any:
        seen.append(step_index)
        return _accumulating()(model, batch, optimizer, loss_fn, step_index)

    run_check("TRN103", prepare(ex.setup(step=step, accumulate=K)))
    assert seen[:8] == list(range(8))


def test_scheduler_after_optimizer_is_clean_and_resumes() -> None:
    training = ex.setup(step=_step_then("optimizer first"), scheduler=_warmup)
    report = run_checks(training, strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN108").verdict is Verdict.PASS and report.get("TRN503").verdict is Verdict.PASS


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_scheduler_before_optimizer_fails() -> None:
    result = run_check("TRN108", prepare(ex.setup(step=_step_then("scheduler first"), scheduler=_warmup)))
    assert result.verdict is Verdict.FAIL and "before the first optimizer.step()" in result.message


def test_a_step_without_a_scheduler_argument_is_skipped_with_the_reason() -> None:
    result = run_check("TRN108", prepare(ex.setup(scheduler=_warmup)))
    assert result.verdict is Verdict.SKIP and "`scheduler` argument" in result.message


def test_per_optimizer_schedulers_for_a_dict_of_optimizers() -> None:
    def step(models: Any, batch: Any, optimizers: Any, loss_fn: Any, scheduler: Any) -> Any:
        x, y = batch
        for opt in optimizers.values():
            opt.zero_grad()
        loss = loss_fn(models["b"](models["a"](x)), y)
        loss.backward()
        for key, opt in optimizers.items():
            opt.step()
            scheduler[key].step()
        return loss

    training = ex.setup(model=lambda: {"a": nn.Linear(ex.FEATURES, 16), "b": nn.Linear(16, ex.CLASSES)},
                        optimizer={"a": ex.adam(), "b": ex.adam()}, scheduler={"a": _warmup, "b": _warmup}, step=step)
    assert run_check("TRN108", prepare(training)).verdict is Verdict.PASS
    assert run_check("TRN503", prepare(training)).verdict is Verdict.PASS


@pytest.mark.parametrize(("fields", "match"), [
    ({"scheduler": 3}, "`scheduler` must be a factory"), ({"accumulate": 0}, "`accumulate` must be an int >= 1")])
def test_bad_schedule_fields_are_refused(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(SetupError, match=match):
        ex.setup(**fields)



def test_amp_unscale_then_clip_is_clean_and_clip_first_fails() -> None:
    from pytest_traincheck.checks.clip_before_unscale import _amp_step

    report = run_checks(ex.setup(step=_amp_step(unscale_first=True)), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN110").verdict is Verdict.PASS
    result = run_check("TRN110", prepare(ex.setup(step=_amp_step(unscale_first=False))))
    assert result.verdict is Verdict.FAIL and "scaler.unscale_(optimizer)" in result.message


class Trainer:
    """The trainer-class shape: the step is a method and the scheduler an attribute it reads."""

    def __init__(self, per_epoch: bool = False, first: bool = False) -> None:
        self.per_epoch, self.first, self.scheduler = per_epoch, first, None

    def make_scheduler(self, optimizer: Any) -> Any:
        self.scheduler = _warmup(optimizer)
        return self.scheduler

    def step(self, model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if self.first and not self.per_epoch:
            self.scheduler.step()
        optimizer.step()
        if not self.first and not self.per_epoch:
            self.scheduler.step()
        return loss


def test_a_scheduler_held_by_the_step_s_object_is_judged() -> None:
    good = Trainer()
    report = run_checks(ex.setup(step=good.step, scheduler=good.make_scheduler), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN108").verdict is Verdict.PASS and report.get("TRN503").verdict is Verdict.PASS
    bad = Trainer(first=True)
    with pytest.warns(UserWarning, match="Detected call"):
        result = run_check("TRN108", prepare(ex.setup(step=bad.step, scheduler=bad.make_scheduler)))
    assert result.verdict is Verdict.FAIL and "before the first optimizer.step()" in result.message


def test_a_held_scheduler_stepped_per_epoch_outside_the_step_is_skipped_not_failed() -> None:
    trainer = Trainer(per_epoch=True)  # `for epoch ...: for batch ...: trainer.step(...)`; then scheduler.step()
    report = run_checks(ex.setup(step=trainer.step, scheduler=trainer.make_scheduler), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    result = report.get("TRN108")
    assert result.verdict is Verdict.SKIP and "stepped per epoch by a loop" in result.message


def test_an_epoch_function_stepping_once_per_epoch_is_clean_and_its_mistakes_fail() -> None:
    from pytest_traincheck.checks.scheduler_step_misordered import _epoch_then

    report = run_checks(ex.setup(step=None, train_epoch=_epoch_then("optimizer first"), scheduler=_warmup),
                        strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN108").verdict is Verdict.PASS and report.get("TRN503").verdict is Verdict.PASS
    never = run_check("TRN108", prepare(ex.setup(step=None, train_epoch=_epoch_then("never"), scheduler=_warmup)))
    assert never.verdict is Verdict.FAIL and "never advanced `scheduler`" in never.message


def test_each_scheduler_is_judged_against_its_own_optimizer() -> None:
    def step(models: Any, batch: Any, optimizers: Any, loss_fn: Any, scheduler: Any) -> Any:
        x, y = batch
        for opt in optimizers.values():
            opt.zero_grad()
        loss = loss_fn(models["b"](models["a"](x)), y)
        loss.backward()
        optimizers["a"].step()
        scheduler["a"].step()
        scheduler["b"].step()  # before its own optimizer's step, though after another optimizer's
        optimizers["b"].step()
        return loss

    training = ex.setup(model=lambda: {"a": nn.Linear(ex.FEATURES, 16), "b": nn.Linear(16, ex.CLASSES)},
                        optimizer={"a": ex.adam(), "b": ex.adam()}, scheduler={"a": _warmup, "b": _warmup}, step=step)
    with pytest.warns(UserWarning, match="Detected call"):
        result = run_check("TRN108", prepare(training))
    assert result.verdict is Verdict.FAIL and "`scheduler[b]`" not in result.message
    assert result.evidence["scheduler"] == "scheduler[b]" and result.evidence["optimizer"] == "b"


def test_a_step_with_only_kwargs_is_not_failed_for_a_scheduler_it_never_asked_for() -> None:
    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any, **kwargs: Any) -> Any:
        return _step_then("never")(model, batch, optimizer, loss_fn)

    result = run_check("TRN108", prepare(ex.setup(step=step, scheduler=_warmup)))
    assert result.verdict is Verdict.SKIP, result.describe()

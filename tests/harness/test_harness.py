"""Isolation, error handling and budgets of the harness and the Python API."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import numpy as np
import pytest
import torch

from pytest_traincheck import CheckResult, Report, Training, Verdict, run_checks
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import all_checks
from pytest_traincheck.harness.record import WINDOW
from pytest_traincheck.harness.results import summary_lines
from pytest_traincheck.harness.runner import enabled_codes, prepare, run_check
from pytest_traincheck.harness.sparkline import sparkline
from pytest_traincheck.harness.spec import SetupError


def _state() -> tuple:
    return (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].tolist(), torch.is_grad_enabled(),
            torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
            torch.is_anomaly_enabled(), torch.nn.utils.clip_grad_norm_)


def _vandal_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(3)
    torch.set_anomaly_enabled(True)
    raise ValueError("boom in user code")


def test_global_state_and_patches_restored_even_when_user_code_raises() -> None:
    torch.manual_seed(99)
    before = _state()
    report = run_checks(ex.setup(step=_vandal_step), select=["TRN101", "TRN105", "TRN601"])
    after = _state()
    assert torch.equal(before[0], after[0])
    assert before[1:] == after[1:]
    assert report.get("TRN101").verdict is Verdict.ERROR


def test_user_error_shows_user_traceback_and_other_checks_still_run() -> None:
    report = run_checks(ex.setup(step=_vandal_step), select=["TRN1", "TRN2"])
    err = report.get("TRN101")
    assert err.verdict is Verdict.ERROR
    assert "the `step` function raised ValueError: boom in user code while running check TRN101" in err.message
    assert "_vandal_step" in err.traceback and "checks/harness.py" not in err.traceback
    assert report.get("TRN202").verdict is Verdict.PASS  # needs no user step


def _evaluate_on(model: Any, loader: Any, device: str) -> float:
    return ex.good_evaluate(model, loader)


def _step_with_scaler(model: Any, batch: Any, optimizer: Any, loss_fn: Any, scaler: Any) -> Any:
    return ex.good_step(model, batch, optimizer, loss_fn)


def test_a_signature_that_does_not_fit_gets_the_wrapping_hint() -> None:
    result = run_check("TRN301", prepare(ex.setup(model=lambda: ex.MLP(dropout=0.5), evaluate=_evaluate_on)))
    assert result.verdict is Verdict.ERROR
    assert "`evaluate` is called as evaluate(model, loader)" in result.message
    assert "_evaluate_on(model, loader, device)" in result.message
    assert "evaluate=lambda model, loader: _evaluate_on(model, loader, device)" in result.message
    step = run_check("TRN101", prepare(ex.setup(step=_step_with_scaler)))
    assert step.verdict is Verdict.ERROR
    assert "step=lambda model, batch, optimizer, loss_fn: _step_with_scaler(model, batch, optimizer, loss_fn, scaler)" \
        in step.message


def test_a_type_error_inside_user_code_is_not_blamed_on_the_signature() -> None:
    def evaluate(model: Any, loader: Any) -> float:
        return len(model)  # a TypeError of the user's own making

    result = run_check("TRN301", prepare(ex.setup(evaluate=evaluate)))
    assert result.verdict is Verdict.ERROR and "lambda" not in result.message and "TypeError" in result.message


def test_model_factory_raising_is_an_error_for_every_check() -> None:
    def broken() -> Any:
        raise RuntimeError("no such layer")

    report = run_checks(ex.setup(model=broken), select=["TRN101", "TRN604"])
    assert {r.verdict for r in report.results} == {Verdict.ERROR}
    assert "the `model` factory raised RuntimeError: no such layer" in report.results[0].message


def test_factory_returning_same_object_is_refused() -> None:
    net = ex.MLP()
    with pytest.raises(SetupError, match="same nn.Module object twice"):
        prepare(ex.setup(model=lambda: net))
    report = run_checks(ex.setup(model=lambda: net), select=["TRN604"])
    assert report.get("TRN604").verdict is Verdict.ERROR


def test_model_instance_instead_of_factory_is_refused() -> None:
    with pytest.raises(SetupError, match="factory returning a fresh nn.Module"):
        ex.setup(model=ex.MLP())


@pytest.mark.parametrize(("data", "match"), [
    ([("a", "b")], "holding no torch.Tensor"),
    ([{"x": [1, 2]}], "holding no torch.Tensor"),
    ([], "is empty"),
])
def test_bad_batches_get_clear_messages(data: Any, match: str) -> None:
    with pytest.raises(SetupError, match=match):
        prepare(ex.setup(data=data))


@pytest.mark.parametrize(("returned", "match"), [
    (None, "returned None"), (torch.ones(3), r"tensor of shape \(3,\)"), ("x", "returned str")])
def test_step_must_return_a_scalar_loss(returned: Any, match: str) -> None:
    def step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        ex.good_step(model, batch, optimizer, loss_fn)
        return returned

    result = run_check("TRN604", prepare(ex.setup(step=step)))
    assert result.verdict is Verdict.ERROR
    assert pytest.importorskip("re").search(match, result.message)


def test_slow_step_hits_the_budget_via_hooks() -> None:
    def slow(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        time.sleep(0.3)
        return ex.good_step(model, batch, optimizer, loss_fn)

    start = time.monotonic()
    result = run_check("TRN601", prepare(ex.setup(step=slow)), budget=0.5)
    assert result.verdict is Verdict.ERROR and "time budget of 0.5s" in result.message
    # Stopped by the budget, not by the end of training: the full run sleeps at least 10 x 0.3 s per seed.
    assert time.monotonic() - start < 0.3 * 10 * 3


def test_hanging_step_is_interrupted_by_the_backstop() -> None:
    def hang(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        time.sleep(60)

    start = time.monotonic()
    result = run_check("TRN601", prepare(ex.setup(step=hang)), budget=0.2)
    assert result.verdict is Verdict.ERROR and "time budget" in result.message
    assert time.monotonic() - start < 45  # the step alone sleeps 60 s: the backstop cut it


def test_the_budget_error_names_the_check_the_slow_part_and_how_to_raise_it() -> None:
    def slow(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        time.sleep(0.3)
        return ex.good_step(model, batch, optimizer, loss_fn)

    result = run_check("TRN101", prepare(ex.setup(step=slow)), budget=0.5)
    assert result.verdict is Verdict.ERROR
    message = result.message
    assert message.startswith("TRN101: the shared training run (step ")  # which check, which part
    assert "slow in the training step" in message  # which code
    assert "--train-sanity-budget" in message and "run_checks(..., budget=" in message  # how to raise it


def test_train_epoch_is_fed_repeated_batches() -> None:
    fed: list[int] = []

    def epoch(model: Any, loader: Any, optimizer: Any, loss_fn: Any) -> None:
        fed.append(0)
        for batch in loader:
            fed[-1] += len(batch[0])
            ex.good_step(model, batch, optimizer, loss_fn)

    result = run_check("TRN601", prepare(ex.setup(step=None, train_epoch=epoch, overfit_steps=40)))
    # The shared run calls the epoch function once per stretch it looks at the model after
    # (WINDOW steps, then up to overfit_steps), each over the fixed batch repeated.
    assert result.verdict is Verdict.PASS and result.curve
    assert fed[0] == WINDOW * ex.SAMPLES and sum(fed) == len(result.curve) * ex.SAMPLES


def test_the_shared_run_is_recorded_once_per_setup_and_seed() -> None:
    calls: list[int] = []

    def step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        calls.append(1)
        return ex.good_step(model, batch, optimizer, loss_fn)

    data = prepare(ex.setup(step=step))
    observers = ["TRN101", "TRN102", "TRN103", "TRN201", "TRN602", "TRN604", "TRN605", "TRN606"]
    for code in observers:
        assert run_check(code, data).verdict is Verdict.PASS, code
    steps = len(calls)
    assert WINDOW <= steps <= data.training.overfit_steps  # one run, read by all of them
    run_check("TRN601", data, seed=1)
    assert len(calls) > steps  # another seed is another run


def test_checks_needing_user_code_skip_with_a_reason() -> None:
    report = run_checks(ex.setup(step=None), select=["TRN101", "TRN301"])
    assert report.get("TRN101").verdict is Verdict.SKIP and "declare `step`" in report.get("TRN101").message
    assert report.get("TRN301").verdict is Verdict.SKIP and "evaluate=" in report.get("TRN301").message


def test_strict_turns_warn_into_fail() -> None:
    from pytest_traincheck.checks.bias_before_batchnorm import BiasBeforeBatchNorm

    data = prepare(BiasBeforeBatchNorm.FAILING[0]())
    assert run_check("TRN202", data).verdict is Verdict.WARN
    strict = run_check("TRN202", data, strict=True)
    assert strict.verdict is Verdict.FAIL and strict.message.startswith("(strict)")


def test_select_and_ignore_use_code_prefixes() -> None:
    assert enabled_codes(["TRN1"]) == ["TRN101", "TRN102", "TRN103", "TRN105", "TRN106", "TRN108", "TRN109", "TRN110"]
    assert "TRN105" not in enabled_codes(["TRN1"], ["TRN105"])
    assert enabled_codes(["TRN105"], ["TRN1"]) == ["TRN105"]  # the more specific selector wins
    with pytest.raises(ValueError, match="XYZ"):
        enabled_codes(["XYZ"])


@pytest.mark.parametrize(("select", "ignore"), [
    (None, []), (["TRN1"], ["TRN105"]), (["TRN105"], ["TRN1"]), (["TRN1"], ["TRN1"]), (None, ["TRN6"]),
    (["ALL"], ["TRN"]), (["TRN"], ["TRN6", "TRN601"]), (["trn60"], []),
])
def test_lint_and_sanity_select_the_same_way(select: Any, ignore: list[str]) -> None:
    from pytest_traincheck.config import LintConfig, override

    config = override(LintConfig(), select=select, ignore=ignore)
    expected = [code for code, cls in all_checks().items() if config.enabled(code, cls.DEFAULT_ON)]
    assert enabled_codes(select, ignore) == expected


def test_cuda_request_without_cuda_skips() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    result = run_check("TRN604", prepare(ex.setup()), device="cuda")
    assert result.verdict is Verdict.SKIP and "CUDA is not available" in result.message


def test_report_json_and_summary() -> None:
    report = run_checks([ex.setup("a"), ex.setup("b", step=None)], select=["TRN101", "TRN604"], seed=3)
    assert isinstance(report, Report) and report.ok
    data = json.loads(report.to_json())
    assert data["meta"]["seed"] == 3 and data["meta"]["checks"] == ["TRN101", "TRN604"]
    assert [r["verdict"] for r in data["setups"]["b"]] == ["skip", "pass"]
    assert "setup 'a'" in report.summary() and "TRN604-initial-loss-off" in report.summary()
    assert isinstance(report.results[0], CheckResult)
    # the pytest plugin renders the dicts its workers send back with the same table
    again = [CheckResult.from_dict(json.loads(json.dumps(r.to_dict()))) for r in report.results]
    assert "\n".join(summary_lines(again)) == report.summary()


def test_the_overfit_check_alone_records_series_and_draws_its_curve() -> None:
    recorders = [code for code, cls in all_checks().items() if cls.RECORDS_SERIES]
    assert recorders == ["TRN601"]  # it trains longest on one batch: its session is the one worth plotting
    curve = [1.0, 0.1, 0.01]
    rows = [CheckResult(code, "slug", Verdict.PASS, "ok", curve=curve, setup="s") for code in ("TRN601", "TRN603")]
    lines = summary_lines(rows)
    assert sparkline(curve, 24) in lines[1] and sparkline(curve, 24) not in lines[2]
    assert lines[1].endswith("end 0.01 (1% of start)")  # the curve's end value, which bars alone hide
    tiny = summary_lines([CheckResult("TRN601", "slug", Verdict.PASS, "ok", curve=[1.5, 1e-4], setup="s")])
    assert tiny[1].endswith("end 0.0001 (<1% of start)")


def test_duplicate_setup_names_are_refused() -> None:
    with pytest.raises(SetupError, match="unique"):
        run_checks([ex.setup("a"), ex.setup("a")])


def test_training_is_keyword_only_and_validated() -> None:
    with pytest.raises(TypeError):
        Training("x", ex.MLP, None, None, [])  # type: ignore[misc]
    with pytest.raises(SetupError, match="either `step`"):
        ex.setup(train_epoch=lambda *a: None)
    with pytest.raises(SetupError, match="task"):
        ex.setup(task="segmentation")


def test_importing_the_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, pytest_traincheck, pytest_traincheck.plugin, pytest_traincheck.checks; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

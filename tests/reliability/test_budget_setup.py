"""The time budget covers preparing a setup (its data and factories), and one timeout blocks the setup's rest."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

torch = pytest.importorskip("torch")

from pytest_traincheck.harness import examples as ex  # noqa: E402
from pytest_traincheck.harness.check import Verdict  # noqa: E402
from pytest_traincheck.harness.runner import Runner, prepare, run_check  # noqa: E402

pytest_plugins = ["pytester"]

BUDGET = 1.0  # the SIGALRM backstop fires at the budget + 2 s: each hang below costs about 3 s
CODES = ["TRN601", "TRN101", "TRN604", "TRN503"]


@pytest.fixture(autouse=True)
def _warm() -> None:
    """Import what the first optimizer imports lazily (torch._dynamo), so that preparing fits the budget."""
    prepare(ex.setup())


def _hanging_model() -> Any:
    time.sleep(60)
    return ex.MLP()


class _HangingData:
    """A data iterable whose first batch never comes (a stuck loader worker, a network read)."""

    def __iter__(self) -> Iterator[Any]:
        time.sleep(60)
        yield ex.blobs()


def _hanging_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    time.sleep(60)


def _run_all(training: Any) -> tuple[list[Any], float]:
    runner = Runner(budget=BUDGET)
    start = time.monotonic()
    results = [runner.run(code, training, key="setup") for code in CODES]
    return results, time.monotonic() - start


@pytest.mark.parametrize(("overrides", "slow_in"), [
    ({"model": _hanging_model}, "slow in the `model` factory"),
    ({"data": _HangingData()}, "slow in iterating `data`"),
])
def test_a_hanging_factory_or_data_iterator_is_one_budget_error(overrides: dict[str, Any], slow_in: str) -> None:
    results, elapsed = _run_all(ex.setup(**overrides))
    first, *rest = results
    assert first.verdict is Verdict.ERROR, first.message
    assert first.message.startswith("TRN601: preparing the setup"), first.message
    assert f"ran past the time budget of {BUDGET:g}s" in first.message and slow_in in first.message
    assert "--train-sanity-budget" in first.message and "\n" not in first.message
    for result in rest:  # the setup is not prepared again, and its items say why they did not run
        assert result.verdict is Verdict.SKIP, (result.code, result.message)
        assert result.message.startswith(f"blocked by TRN601 timing out ({slow_in}"), result.message
    assert elapsed < 30  # one backstop, not a 60 s sleep per item


def test_after_a_step_times_out_the_setups_other_checks_are_blocked_not_rerun() -> None:
    data = prepare(ex.setup(step=_hanging_step))  # prepared without a budget: the step is what hangs
    start = time.monotonic()
    first, *rest = [run_check(code, data, budget=BUDGET) for code in CODES]
    elapsed = time.monotonic() - start
    assert first.verdict is Verdict.ERROR and "time budget" in first.message, first.message
    for result in rest:
        assert result.verdict is Verdict.SKIP, (result.code, result.message)
        assert result.message.startswith("blocked by TRN601 timing out (slow in the training step)")
        assert result.evidence["blocked_by"] == "TRN601"
    assert elapsed < 30


def test_a_timeout_blocks_only_its_own_setup() -> None:
    hangs, fine = prepare(ex.setup(step=_hanging_step)), prepare(ex.setup())
    assert run_check("TRN601", hangs, budget=BUDGET).verdict is Verdict.ERROR
    assert run_check("TRN101", hangs, budget=BUDGET).verdict is Verdict.SKIP
    assert run_check("TRN101", fine).verdict is Verdict.PASS


SETUPS = '''
import time
from pytest_traincheck.harness import examples as ex

def hanging_model():
    time.sleep(60)
    return ex.MLP()

def make():
    return [ex.setup("stuck", model=hanging_model)]
'''


def test_pytest_reports_a_hanging_factory_once_and_blocks_the_other_items(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(stucksetup=SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["stucksetup:make"]\nbudget = 1.0\n')
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider", "-k", "TRN101 or TRN604 or TRN601",
                                "-rs")
    result.assert_outcomes(failed=1, skipped=2)
    out = result.stdout.str()
    assert "preparing the setup (its first batch and two models from the factories) ran past the time budget" in out
    assert "slow in the `model` factory" in out and "budget = " in out
    assert "blocked by TRN101 timing out" in out
    assert "Traceback" not in out

"""NaN never reads as health: a non-finite loss or gradient is never a pass with nan in its numbers."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from pytest_traincheck.harness import examples as ex  # noqa: E402
from pytest_traincheck.harness.check import Verdict  # noqa: E402
from pytest_traincheck.harness.runner import prepare, run_check  # noqa: E402


def _nan_input_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    inputs, targets = batch
    return ex.good_step(model, (inputs * float("nan"), targets), optimizer, loss_fn)


@pytest.mark.parametrize("code", ["TRN604", "TRN605"])
def test_a_nan_step_is_never_healthy(code: str) -> None:
    result = run_check(code, prepare(ex.setup(step=_nan_input_step)))
    assert result.verdict is not Verdict.PASS, result.message
    assert "nan..nan" not in result.message and "nanx" not in result.message, result.message
    assert "not finite" in result.message, result.message

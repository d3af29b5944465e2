"""Every check's own example setups: passing ones PASS, failing ones give their verdict."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from pytest_traincheck.harness.check import Verdict, all_checks
from pytest_traincheck.harness.runner import prepare, run_check


def _cases() -> list[Any]:
    cases = []
    for code, cls in all_checks().items():
        name = cls.__name__
        for i, factory in enumerate(cls.PASSING, 1):
            cases.append(pytest.param(code, factory, Verdict.PASS, id=f"{code}-{name}-PASSING-{i}"))
        for i, (factory, verdict) in enumerate(cls.failing_examples(), 1):
            cases.append(pytest.param(code, factory, verdict, id=f"{code}-{name}-FAILING-{i}"))
    return cases


@pytest.mark.parametrize(("code", "factory", "expected"), _cases())
def test_example(code: str, factory: Callable[[], Any], expected: Verdict) -> None:
    result = run_check(code, prepare(factory()))
    assert result.verdict is expected, result.describe()
    if expected is not Verdict.PASS:
        assert any(ch.isdigit() for ch in result.message), "a finding states its evidence in numbers"
        assert result.evidence and result.fix


@pytest.mark.parametrize("code", list(all_checks()))
def test_every_check_has_both_kinds_of_examples(code: str) -> None:
    cls = all_checks()[code]
    assert cls.PASSING and cls.FAILING, f"{code} needs passing and failing example setups"
    assert cls.__doc__, f"{code} needs a one-line docstring"

"""Every rule's own VALID and INVALID examples, run as tests."""

from __future__ import annotations

import pytest

from pytest_traincheck.lint.rule import Invalid, Rule, Valid
from pytest_traincheck.lint.registry import all_rules
from pytest_traincheck.lint.testing import lint_source


def _cases() -> list:
    cases = []
    for rule in all_rules():
        for kind, examples in (("VALID", rule.VALID), ("INVALID", rule.INVALID)):
            for index, example in enumerate(examples, 1):
                if isinstance(example, str):
                    example = Valid(example) if kind == "VALID" else Invalid(example)
                cases.append(pytest.param(rule, example, id=f"{rule.CODE}-{rule.__name__}-{kind}-{index}"))
    return cases


@pytest.mark.parametrize(("rule", "example"), _cases())
def test_rule_example(rule: type[Rule], example: Valid | Invalid) -> None:
    files = example.files
    findings, _ = lint_source(example.source(), [rule.CODE], files=files, dedent=False)
    if isinstance(example, Valid):
        assert findings == [], f"false positive: {findings}"
        return
    assert findings, "the rule missed its own invalid example"
    if example.line is not None:
        assert findings[0].line == example.line, findings
    if example.column is not None:
        assert findings[0].column == example.column, findings
    fixed_expected = example.fixed_source()
    _, fixed = lint_source(example.source(), [rule.CODE], files=files, fix=True, unsafe_fixes=True, dedent=False)
    if fixed_expected is None:
        assert fixed is None, "a fix was applied but the example declares none"
        return
    assert fixed == fixed_expected
    # Idempotent: the fixed code is reported no more (for the fixed finding) and fixing again changes nothing.
    again, refixed = lint_source(fixed, [rule.CODE], files=files, fix=True, unsafe_fixes=True, dedent=False)
    assert refixed is None
    assert len(again) < len(findings)


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: f"{r.CODE}-{r.__name__}")
def test_rule_is_documented_and_exemplified(rule: type[Rule]) -> None:
    # The sections every rule has are checked with the checks' in tests/test_docs.py.
    if rule.fixable():
        assert "## Fix safety" in rule.docs() and rule.FIX_TITLE
    assert rule.MESSAGE.endswith("."), "MESSAGE is a full sentence"
    assert len([e for e in rule.VALID]) >= 3 and len([e for e in rule.INVALID]) >= 3


def test_codes_are_unique_and_catalogued() -> None:
    from pytest_traincheck import catalog

    codes = [rule.CODE for rule in all_rules()]
    assert len(codes) == len(set(codes))
    assert set(codes) <= set(catalog.CATALOG)

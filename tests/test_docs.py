"""The README's rule table is generated from the rules; it must not go stale."""

from __future__ import annotations

from pathlib import Path

from pytest_traincheck.lint.docs import readme_with_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_rule_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert text == readme_with_table(text), "README rule table is stale: run `python -m pytest_traincheck.lint.docs README.md`"

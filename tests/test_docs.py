"""The README's rule table is generated from the rules; it must not go stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_traincheck.lint.docs import readme_with_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_rule_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert text == readme_with_table(text), "README rule table is stale: run `python -m pytest_traincheck.lint.docs README.md`"


def test_check_manifest_matches_the_checks() -> None:
    """`traincheck rules`/`explain` read the checks' codes and docs from the manifest, without torch."""
    pytest.importorskip("torch")
    from pytest_traincheck.harness import manifest

    assert manifest.render(manifest.build()) == manifest.MANIFEST.read_text(encoding="utf-8"), \
        "harness/data/checks.json is stale: run `python -m pytest_traincheck.harness.manifest`"

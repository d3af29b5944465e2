"""Every rule and check is documented in its sections; the generated tables and manifests must not go stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_traincheck.harness.manifest import checks
from pytest_traincheck.lint.docs import readme_with_table
from pytest_traincheck.lint.registry import all_rules

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_rule_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert text == readme_with_table(text), "README rule table is stale: run `python scripts/regenerate.py`"


def test_check_manifest_matches_the_checks() -> None:
    """`traincheck rules`/`explain` read the checks' codes and docs from the manifest, without torch."""
    pytest.importorskip("torch")
    from pytest_traincheck.harness import manifest

    assert manifest.render(manifest.build()) == manifest.MANIFEST.read_text(encoding="utf-8"), \
        "harness/data/checks.json is stale: run `python scripts/regenerate.py`"


RULE_SECTIONS = ("## What it does", "## Why is this bad?", "## Example", "## Use instead")
CHECK_SECTIONS = ("## What it measures", "## Why it matters", "## Thresholds", "## Known problems", "## Example")
DOCUMENTED = ([(f"rule-{r.CODE}", r.docs(), RULE_SECTIONS) for r in all_rules()]
              + [(f"check-{code}", entry["docs"], CHECK_SECTIONS) for code, entry in checks().items()])


@pytest.mark.parametrize(("what", "docs", "sections"), DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_every_rule_and_check_is_documented_in_sections(what: str, docs: str, sections: tuple[str, ...]) -> None:
    """`traincheck explain` shows these sections; each is present and says something."""
    summary = docs.split("\n", 1)[0]
    assert summary and not summary.startswith("#"), f"{what}: the docs start with a one-line summary"
    for section in sections:
        assert f"\n{section}\n" in docs, f"{what} docs lack {section!r}"
        body = docs.split(f"\n{section}\n", 1)[1].split("\n## ", 1)[0]
        assert body.strip(), f"{what}: {section!r} is empty"
    if "## Example" in sections:
        assert "```" in docs.split("## Example", 1)[1], f"{what}: the example is a code block"


def test_one_repository_path_everywhere() -> None:
    import re

    root = README.parent
    texts = {p.name: p.read_text(encoding="utf-8") for p in [README, *sorted((root / "docs").glob("*.md"))]}
    repos = {(name, m) for name, text in texts.items()
             for m in re.findall(r"github\.com/([\w.-]+/pytest-traincheck)", text)}
    uses = {(name, m) for name, text in texts.items() for m in re.findall(r"uses: ([\w.-]+/pytest-traincheck)@", text)}
    assert {m for _, m in repos | uses} == {"traincheck/pytest-traincheck"}, sorted(repos | uses)

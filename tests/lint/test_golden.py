"""Golden files: whole training scripts and the findings expected in them (`line:col CODE` per line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_traincheck.lint import engine
from pytest_traincheck.lint.registry import all_rules

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SCRIPTS = sorted(p for p in GOLDEN.glob("*.py"))


def _lint(path: Path) -> list[str]:
    codes = tuple(rule.CODE for rule in all_rules())  # every rule, off-by-default ones too
    result = engine.lint_bytes(path.name, path.read_bytes(), engine.Settings(codes))
    return [f"{f.line}:{f.column} {f.code}" for f in engine.settle([result])]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_golden(script: Path) -> None:
    expected_file = script.with_suffix(".expected")
    expected = [line.strip() for line in expected_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert _lint(script) == expected


if __name__ == "__main__":  # regenerate: python tests/rules/test_golden.py (then review every line!)
    for script in SCRIPTS:
        script.with_suffix(".expected").write_text("".join(f"{line}\n" for line in _lint(script)))

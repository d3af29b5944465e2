"""Helpers to lint snippets in memory: used by the rule-example tests and by rule authors."""

from __future__ import annotations

import textwrap
from typing import Optional, Sequence

from pytest_traincheck.lint.findings import Finding
from pytest_traincheck.lint import engine


def lint_source(
    source: str,
    codes: Sequence[str],
    *,
    path: str = "snippet.py",
    files: Optional[dict[str, str]] = None,
    fix: bool = False,
    unsafe_fixes: bool = False,
    dedent: bool = True,
    torch_version: Optional[str] = None,
) -> tuple[list[Finding], Optional[str]]:
    """Lint ``source`` (plus other in-memory ``files`` of the same run) with only ``codes``.

    Returns the findings in ``path`` and, when fixing, the fixed source (None if unchanged).
    """
    settings = engine.Settings(tuple(codes), fix=fix, unsafe_fixes=unsafe_fixes, torch_version=torch_version)
    text = textwrap.dedent(source).lstrip("\n") if dedent else source
    results = [engine.lint_bytes(path, text.encode("utf-8"), settings)]
    for name, other in (files or {}).items():
        other_text = textwrap.dedent(other).lstrip("\n")
        results.append(engine.lint_bytes(name, other_text.encode("utf-8"), engine.Settings(tuple(codes))))
    findings = [f for f in engine.settle(results) if f.path == path]
    return findings, results[0].fixed_source

"""Which dynamic checks exist, their defaults and their documentation, known without importing torch.

The check modules import torch, which a lint-only install does not have; yet
`traincheck rules` and `traincheck explain` show the checks too. The manifest
in ``data/checks.json`` is generated from the checks' own classes (their
docstrings are the one source of the documentation); a test keeps it in step,
and ``python -m pytest_traincheck.harness.manifest`` rewrites it after a check
is added or its documentation changes.
"""

from __future__ import annotations

import inspect
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).with_name("data") / "checks.json"


@lru_cache(maxsize=1)
def checks() -> dict[str, dict[str, Any]]:
    """Return ``{code: {"default_on": bool, "docs": str}}`` for every dynamic check, sorted by code."""
    return dict(json.loads(MANIFEST.read_text(encoding="utf-8")))


def check_docs(code: str) -> str:
    """Return the documentation of the check ``code``, or "" when no check has that code."""
    return str(checks().get(code, {}).get("docs", ""))


def build() -> dict[str, dict[str, Any]]:
    """Compute the manifest from the check registry (imports torch)."""
    from pytest_traincheck.harness.check import all_checks

    return {code: {"default_on": cls.DEFAULT_ON, "docs": inspect.cleandoc(cls.__doc__ or "")}
            for code, cls in all_checks().items()}


def render(entries: dict[str, dict[str, Any]]) -> str:
    """Return the manifest file's text."""
    return json.dumps(entries, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    """Rewrite the manifest from the registry."""
    entries = build()
    MANIFEST.write_text(render(entries), encoding="utf-8")
    sys.stdout.write(f"wrote {MANIFEST} ({len(entries)} checks)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

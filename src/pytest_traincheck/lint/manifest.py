"""Which lint rules exist and which are on by default, known without importing them.

Building the rule registry imports libcst and every rule module, which costs
more than a whole warm run answered from the cache. The manifest in
``data/rules.json`` records the registry's codes and defaults; a test checks it
against the registry, and ``python -m pytest_traincheck.lint.manifest``
rewrites it after a rule is added or its default changes.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

MANIFEST = Path(__file__).with_name("data") / "rules.json"


@lru_cache(maxsize=1)
def rule_defaults() -> dict[str, bool]:
    """Return ``{code: on by default}`` for every lint rule, sorted by code."""
    return dict(json.loads(MANIFEST.read_text(encoding="utf-8")))


def build() -> dict[str, bool]:
    """Compute the manifest from the rule registry."""
    from pytest_traincheck.lint.registry import all_rules

    return {rule.CODE: rule.DEFAULT_ON for rule in all_rules()}


def render(defaults: dict[str, bool]) -> str:
    """Return the manifest file's text."""
    return json.dumps(defaults, indent=1, sort_keys=True) + "\n"


def main() -> int:
    """Rewrite the manifest from the registry."""
    MANIFEST.write_text(render(build()), encoding="utf-8")
    sys.stdout.write(f"wrote {MANIFEST} ({len(build())} rules)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

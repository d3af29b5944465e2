"""Regenerate every file generated from the rules and checks; tests fail until this has run.

    python scripts/regenerate.py

Writes src/pytest_traincheck/lint/data/rules.json (rule codes and defaults, read by
warm lint runs), src/pytest_traincheck/harness/data/checks.json (check codes, defaults
and documentation, read by `traincheck rules`/`explain` without torch) and the rule
table of README.md. (analyses/data/torch_names.json depends on the installed torch:
scripts/gen_torch_names.py.)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pytest_traincheck.harness import manifest as check_manifest  # noqa: E402
from pytest_traincheck.lint import manifest as rule_manifest  # noqa: E402
from pytest_traincheck.lint.docs import readme_with_table  # noqa: E402


def main() -> int:
    """Rewrite the two manifests, then the README table (which reads the check manifest)."""
    rule_manifest.main()
    check_manifest.main()
    check_manifest.checks.cache_clear()
    readme = ROOT / "README.md"
    readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"wrote {readme} (rule table)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

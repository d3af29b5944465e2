"""The rule table, generated from the rules' own metadata (for `traincheck rules` and the README)."""

from __future__ import annotations

from pytest_traincheck import catalog


def _dynamic_codes() -> set[str]:
    """Return the codes that have a dynamic check (from the manifest: no torch needed)."""
    from pytest_traincheck.harness.manifest import checks

    return set(checks())


def rule_rows() -> list[tuple[str, str, str, str, str, str]]:
    """Return (code, name, lint, fix, sanity, summary) for every catalogued pitfall."""
    from pytest_traincheck.lint.registry import all_rules

    rules = {rule.CODE: rule for rule in all_rules()}
    dynamic = _dynamic_codes()
    rows = []
    for code, entry in catalog.CATALOG.items():
        if code in ("TRN000", "TRN001", "TRN002"):
            continue
        rule = rules.get(code)
        lint = "-" if rule is None else ("on" if rule.DEFAULT_ON else "off")
        fix = "-" if rule is None or not rule.fixable() else ("safe" if rule.FIX_SAFE else "unsafe")
        sanity = "yes" if code in dynamic else "-"
        if lint == "-" and sanity == "-":
            continue
        rows.append((code, entry.slug, lint, fix, sanity, entry.summary))
    return rows


def rules_markdown() -> str:
    """Return the README's rule table as Markdown."""
    lines = [
        "| code | name | lint (default) | fix | train-sanity | what goes wrong |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for code, name, lint, fix, sanity, summary in rule_rows():
        lines.append(f"| {code} | `{name}` | {lint} | {fix} | {sanity} | {summary.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


_START, _END = "<!-- rules:start -->", "<!-- rules:end -->"


def readme_with_table(text: str) -> str:
    """Return the README text with its rule table regenerated between the markers."""
    head, _, rest = text.partition(_START)
    _, _, tail = rest.partition(_END)
    return f"{head}{_START}\n{rules_markdown()}{_END}{tail}"


if __name__ == "__main__":  # python -m pytest_traincheck.lint.docs README.md
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    target.write_text(readme_with_table(target.read_text(encoding="utf-8")), encoding="utf-8")

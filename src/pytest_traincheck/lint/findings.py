"""Findings and the formats that print them."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from pytest_traincheck import catalog


@dataclass(frozen=True)
class Finding:
    """One problem at one place in one file."""

    path: str
    line: int
    column: int  # 1-based, like the text output
    end_line: int
    end_column: int
    code: str
    message: str
    fixable: bool = False
    fix_title: Optional[str] = None
    severity: str = "error"
    unsafe_fix: bool = False  # a fix exists, but only `--unsafe-fixes` applies it
    # In a notebook: line and column count within code cell number ``cell`` (1-based among all
    # cells); ``file_line``/``file_end_line`` are where that code sits in the .ipynb file's text.
    cell: Optional[int] = None
    file_line: Optional[int] = None
    file_end_line: Optional[int] = None

    @property
    def name(self) -> str:
        """Return the catalogue slug of this finding's code."""
        entry = catalog.CATALOG.get(self.code)
        return entry.slug if entry else self.code.lower()

    def sort_key(self) -> tuple[str, int, int, int, str]:
        """Order findings by path, cell, line, column, code."""
        return (self.path, self.cell or 0, self.line, self.column, self.code)

    @property
    def location(self) -> str:
        """Return ``path:line:col``, or ``path:cell N:line L:col`` in a notebook."""
        if self.cell is not None:
            return f"{self.path}:cell {self.cell}:line {self.line}:{self.column}"
        return f"{self.path}:{self.line}:{self.column}"

    def to_json(self) -> dict[str, object]:
        """Return the public JSON object: exactly the documented keys."""
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "fixable": self.fixable,
            **({"cell": self.cell} if self.cell is not None else {}),
        }

    def to_dict(self) -> dict[str, object]:
        """Return every field, for the cache."""
        return asdict(self)


@dataclass
class LintSummary:
    """What a whole lint run found and did."""

    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    fixed: int = 0
    internal_errors: int = 0

    @property
    def fixable(self) -> int:
        """Count the findings that ``--fix`` could repair."""
        return sum(1 for f in self.findings if f.fixable)

    @property
    def hidden_fixes(self) -> int:
        """Count the findings whose fix only ``--unsafe-fixes`` applies."""
        return sum(1 for f in self.findings if f.unsafe_fix and not f.fixable)


Formatter = Callable[[LintSummary, "FormatOptions"], str]


@dataclass
class FormatOptions:
    """Knobs shared by the formatters."""

    show_fixes: bool = True
    statistics: bool = False
    quiet: bool = False
    sources: Optional[dict[str, str]] = None  # path -> text, for the code frames of `full`
    unsafe_fixes: bool = False


def _fix_marker(finding: Finding) -> str:
    return "[*] " if finding.fixable else ""


def _summary_line(summary: LintSummary) -> str:
    n = len(summary.findings)
    if n == 0:
        fixed = f" Fixed {summary.fixed} problem{'s' if summary.fixed != 1 else ''}." if summary.fixed else ""
        return f"All checks passed!{fixed}"
    parts = [f"Found {n} problem{'s' if n != 1 else ''}"]
    if summary.fixable:
        parts.append(f" ({summary.fixable} fixable with --fix)")
    line = "".join(parts) + "."
    if summary.hidden_fixes:
        line += f" {summary.hidden_fixes} more fixable with --fix --unsafe-fixes (review them)."
    if summary.fixed:
        line = f"Fixed {summary.fixed}, " + line[0].lower() + line[1:]
    return line


def _statistics(findings: Sequence[Finding]) -> list[str]:
    counts = Counter(f.code for f in findings)
    fixable = {f.code for f in findings if f.fixable}
    rows = []
    for code, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        mark = "[*]" if code in fixable else "   "
        rows.append(f"{count:>5}  {code}  {mark} {catalog.CATALOG[code].slug if code in catalog.CATALOG else ''}")
    return rows


def format_concise(summary: LintSummary, options: FormatOptions) -> str:
    """Return one line per finding, ``path:line:col: CODE [*] message``."""
    if options.statistics:
        lines = _statistics(summary.findings)
    else:
        lines = [
            f"{f.location}: {f.code} {_fix_marker(f)}{f.message}" for f in summary.findings
        ]
    if not options.quiet:
        lines.append(_summary_line(summary))
    return "\n".join(lines) + ("\n" if lines else "")


def _code_frame(source: str, finding: Finding, context: int = 1) -> list[str]:
    lines = source.splitlines()
    first = max(1, finding.line - context)
    last = min(len(lines), finding.end_line + context)
    width = len(str(last))
    out = []
    for number in range(first, last + 1):
        text = lines[number - 1] if number - 1 < len(lines) else ""
        out.append(f"  {number:>{width}} | {text}")
        if number == finding.line:
            start = finding.column - 1
            stop = finding.end_column - 1 if finding.end_line == finding.line else len(text)
            out.append(f"  {'':>{width}} | {' ' * start}{'^' * max(1, stop - start)}")
    return out


def _help(f: Finding) -> Optional[str]:
    """Return the fix title of a fix a flag applies (naming the flag if unsafe), else the catalogue's advice."""
    if f.fix_title and f.fixable:
        return f.fix_title
    if f.fix_title and f.unsafe_fix:
        return f"{f.fix_title} (--fix --unsafe-fixes)"
    entry = catalog.CATALOG.get(f.code)
    return entry.fix if entry is not None and entry.fix else None


def format_full(summary: LintSummary, options: FormatOptions) -> str:
    """Return each finding with a code frame, the underline and the fix title."""
    if options.statistics:
        return format_concise(summary, options)
    blocks = []
    for f in summary.findings:
        block = [f"{f.location}: {f.code} {_fix_marker(f)}{f.message}"]
        source = (options.sources or {}).get(f.path if f.cell is None else f"{f.path}#cell{f.cell}")
        if source is not None and f.code != "TRN000":
            block.extend(_code_frame(source, f))
        advice = _help(f)
        if advice:
            block.append(f"  = help: {advice}")
        blocks.append("\n".join(block))
    if not options.quiet:
        blocks.append(_summary_line(summary))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def format_json(summary: LintSummary, options: FormatOptions) -> str:
    """Return a JSON array of findings and nothing else."""
    return json.dumps([f.to_json() for f in summary.findings], indent=2) + "\n"


def _github_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def format_github(summary: LintSummary, options: FormatOptions) -> str:
    """Return GitHub Actions workflow commands that annotate the diff."""
    lines = []
    for f in summary.findings:
        level = {"error": "error", "warning": "warning"}.get(f.severity, "notice")
        title = _github_escape(f.code + " " + f.name, prop=True)
        if f.cell is not None:  # the annotation sits on the .ipynb file's own line; the text names the cell
            props = f"file={_github_escape(f.path, prop=True)},line={f.file_line},endLine={f.file_end_line},title={title}"
            text = f"{f.code} cell {f.cell}, line {f.line}: {f.message}"
        else:
            props = (f"file={_github_escape(f.path, prop=True)},line={f.line},col={f.column},"
                     f"endLine={f.end_line},endColumn={f.end_column},title={title}")
            text = f"{f.code} {f.message}"
        lines.append(f"::{level} {props}::{_github_escape(text)}")
    return "\n".join(lines) + ("\n" if lines else "")


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Return findings sorted by path, line, column, code, without duplicates."""
    return sorted(set(findings), key=Finding.sort_key)

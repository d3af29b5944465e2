"""The output formats of `traincheck lint`: the one table of names, SARIF and JUnit.

``sarif`` is SARIF 2.1.0 as GitHub code scanning reads it (upload it with
``github/codeql-action/upload-sarif``); ``junit`` is the JUnit XML that CI
servers show as a test report: one test case per linted file.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Optional
from urllib.parse import quote
from xml.etree import ElementTree as ET

from pytest_traincheck import __version__, catalog
from pytest_traincheck.lint.findings import (
    Finding,
    FormatOptions,
    Formatter,
    LintSummary,
    format_concise,
    format_full,
    format_github,
    format_json,
)

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/pytest-traincheck/"
SRCROOT = "%SRCROOT%"
_LEVELS = {"error": "error", "warning": "warning", "info": "note"}


# -- SARIF ---------------------------------------------------------------------


def _level(severity: str) -> str:
    return _LEVELS.get(severity, "note")


def _rule_classes() -> dict[str, Any]:
    """Return code -> rule class for every registered lint rule (empty if the registry fails)."""
    try:
        from pytest_traincheck.lint.registry import all_rules

        return {rule.CODE: rule for rule in all_rules()}
    except Exception:  # a broken rule module must not break the report
        return {}


def _rule_descriptor(code: str, rule: Any, severity: Optional[str]) -> dict[str, Any]:
    entry = catalog.CATALOG.get(code)
    slug = entry.slug if entry else code.lower()
    summary = entry.summary if entry else code
    fix = entry.fix if entry else ""
    docs = inspect.cleandoc(rule.docs()) if rule is not None and rule.docs() else ""
    if docs:
        short = docs.splitlines()[0].strip()
        help_markdown = docs
    else:
        short = summary
        help_markdown = f"{summary}\n\n## Fix\n{fix}" if fix else summary
    help_text = f"{summary} Fix: {fix}" if fix else summary
    level = _level(severity or (rule.SEVERITY if rule is not None else "error"))
    descriptor: dict[str, Any] = {
        "id": code,
        "name": slug,
        "shortDescription": {"text": short},
        "fullDescription": {"text": summary},
        "help": {"text": help_text, "markdown": help_markdown},
        "defaultConfiguration": {"level": level},
        "properties": {"tags": ["traincheck", "pytorch"]},
    }
    return descriptor


def _artifact_location(path: str) -> dict[str, Any]:
    """Return a SARIF artifactLocation: relative to %SRCROOT% when possible, else a file URI."""
    pure = PurePosixPath(path.replace(os.sep, "/"))
    if pure.is_absolute() or Path(path).is_absolute():
        try:
            return {"uri": Path(path).resolve().as_uri()}
        except ValueError:
            return {"uri": quote(pure.as_posix())}
    return {"uri": quote(pure.as_posix(), safe="/"), "uriBaseId": SRCROOT}


def _result(finding: Finding, index: int) -> dict[str, Any]:
    region: dict[str, Any] = {
        "startLine": finding.line,
        "startColumn": finding.column,
        "endLine": max(finding.end_line, finding.line),
        "endColumn": max(finding.end_column, 1),
    }
    message = finding.message
    extra: dict[str, Any] = {}
    if finding.cell is not None and finding.file_line is not None:
        # A notebook: the region is the lines of the .ipynb text that hold the code (what code
        # scanning shows); the cell and its line are in the message and the properties.
        region = {"startLine": finding.file_line, "endLine": max(finding.file_end_line or 0, finding.file_line)}
        message = f"{message} (cell {finding.cell}, line {finding.line})"
        extra = {"properties": {"cell": finding.cell, "cellLine": finding.line, "cellColumn": finding.column}}
    return {
        "ruleId": finding.code,
        "ruleIndex": index,
        "level": _level(finding.severity),
        "message": {"text": message},
        "locations": [
            {"physicalLocation": {"artifactLocation": _artifact_location(finding.path), "region": region}}
        ],
        **extra,
    }


def sarif_log(summary: LintSummary) -> dict[str, Any]:
    """Return the SARIF 2.1.0 log of ``summary`` as a JSON-ready dict."""
    rules = _rule_classes()
    severities = {f.code: f.severity for f in summary.findings}
    codes = sorted(set(rules) | set(severities))
    index = {code: i for i, code in enumerate(codes)}
    descriptors = [_rule_descriptor(code, rules.get(code), severities.get(code)) for code in codes]
    root = Path.cwd().resolve().as_uri().rstrip("/") + "/"
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "traincheck",
                "version": __version__,
                "semanticVersion": __version__,
                "informationUri": INFORMATION_URI,
                "rules": descriptors,
            }
        },
        "originalUriBaseIds": {SRCROOT: {"uri": root}},
        "columnKind": "unicodeCodePoints",
        "invocations": [{"executionSuccessful": summary.internal_errors == 0}],
        "results": [_result(f, index[f.code]) for f in summary.findings],
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def format_sarif(summary: LintSummary, options: FormatOptions) -> str:
    """Return the findings as a SARIF 2.1.0 log (nothing else on stdout)."""
    return json.dumps(sarif_log(summary), indent=2) + "\n"


# -- JUnit ---------------------------------------------------------------------


# Characters XML 1.0 cannot hold, even escaped (a message may quote a broken file).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _failure_text(findings: list[Finding]) -> str:
    return "\n".join(f"{f.location}: {f.code} {f.message}" for f in findings) + "\n"


def format_junit(summary: LintSummary, options: FormatOptions) -> str:
    """Return JUnit XML: a test case per file with findings (per linted file when ``options.sources`` lists them)."""
    by_path: dict[str, list[Finding]] = {}
    for finding in summary.findings:
        by_path.setdefault(finding.path, []).append(finding)
    paths = sorted(set(by_path) | set(options.sources or {}))
    tests = max(summary.files_checked, len(paths))
    failures = len(by_path)
    errors = 1 if summary.internal_errors else 0
    suites = ET.Element("testsuites", name="traincheck", tests=str(tests), failures=str(failures),
                        errors=str(errors), time="0")
    suite = ET.SubElement(suites, "testsuite", name="traincheck lint", tests=str(tests), failures=str(failures),
                          errors=str(errors), skipped="0", time="0")
    for path in paths:
        name = _xml_text(path)
        case = ET.SubElement(suite, "testcase", classname="traincheck", name=name, file=name, time="0")
        found = by_path.get(path)
        if not found:
            continue
        codes = ", ".join(sorted({f.code for f in found}))
        message = f"{len(found)} problem{'s' if len(found) != 1 else ''} ({codes})"
        failure = ET.SubElement(case, "failure", message=message, type="traincheck")
        failure.text = _xml_text(_failure_text(found))
    ET.indent(suites)
    body = ET.tostring(suites, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


# The one table of output formats: a new format is a function here and a line in this table.
FORMATTERS: dict[str, Formatter] = {
    "text": format_concise,
    "concise": format_concise,
    "full": format_full,
    "json": format_json,
    "github": format_github,
    "sarif": format_sarif,
    "junit": format_junit,
}


def render(summary: LintSummary, fmt: str, options: FormatOptions) -> str:
    """Render ``summary`` in the named format."""
    return FORMATTERS[fmt](summary, options)


def format_names() -> list[str]:
    """Return every output format name."""
    return sorted(FORMATTERS)

"""Every output format: text/concise, full, json, github, sarif, junit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from pytest_traincheck.lint.findings import Finding, FormatOptions, LintSummary
from pytest_traincheck.lint.formats import format_names, render

DATA = Path(__file__).resolve().parents[1] / "data"
DEPRECATED = "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n"
JSON_KEYS = {"path", "line", "column", "end_line", "end_column", "code", "name", "message", "fixable"}


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytest_traincheck`` in ``cwd``."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "pytest_traincheck", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=env, timeout=60)


def _finding(path: str = "pkg/train.py", **changes: object) -> Finding:
    values: dict[str, object] = dict(path=path, line=2, column=1, end_line=2, end_column=49, code="TRN107",
                                     message="`clip_grad_norm` is deprecated.", fixable=True,
                                     fix_title="Rename to `clip_grad_norm_`")
    values.update(changes)
    return Finding(**values)  # type: ignore[arg-type]


def _summary(*findings: Finding, files: int = 2) -> LintSummary:
    return LintSummary(findings=list(findings), files_checked=files)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "train.py").write_text(DEPRECATED)
    (tmp_path / "pkg" / "broken.py").write_text("import torch\ndef f(:\n    pass\n")
    (tmp_path / "pkg" / "clean.py").write_text("import torch\n")
    return tmp_path


# -- registration ----------------------------------------------------------------


def test_every_documented_format_is_registered() -> None:
    assert {"text", "concise", "full", "json", "github", "sarif", "junit"} <= set(format_names())


# -- concise / full ------------------------------------------------------------------


def test_concise_lines_and_summary() -> None:
    out = render(_summary(_finding(), _finding(line=5, end_line=5, fixable=False)), "concise", FormatOptions())
    assert out.splitlines() == [
        "pkg/train.py:2:1: TRN107 [*] `clip_grad_norm` is deprecated.",
        "pkg/train.py:5:1: TRN107 `clip_grad_norm` is deprecated.",
        "Found 2 problems (1 fixable with --fix).",
    ]


def test_concise_quiet_and_clean() -> None:
    assert render(_summary(_finding()), "concise", FormatOptions(quiet=True)).splitlines() == [
        "pkg/train.py:2:1: TRN107 [*] `clip_grad_norm` is deprecated."
    ]
    assert render(_summary(), "text", FormatOptions()) == "All checks passed!\n"
    assert render(_summary(), "text", FormatOptions(quiet=True)) == ""


def test_statistics_counts_per_code() -> None:
    summary = _summary(_finding(), _finding(line=4, end_line=4), _finding(code="TRN000", fixable=False))
    lines = render(summary, "concise", FormatOptions(statistics=True, quiet=True)).splitlines()
    assert lines[0].split() == ["2", "TRN107", "[*]", "deprecated-clip-grad-norm"]
    assert lines[1].split() == ["1", "TRN000", "syntax-error"]


def test_full_shows_code_frame_underline_and_help() -> None:
    source = DEPRECATED
    out = render(_summary(_finding(end_column=55)), "full", FormatOptions(sources={"pkg/train.py": source}))
    assert "pkg/train.py:2:1: TRN107 [*] `clip_grad_norm` is deprecated." in out
    assert "  2 | torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)" in out
    assert "    | " + "^" * 54 + "\n" in out
    assert "= help: Rename to `clip_grad_norm_`" in out
    assert out.rstrip().endswith("Found 1 problem (1 fixable with --fix).")


def test_full_help_of_an_unfixable_finding_reads_as_advice() -> None:
    from pytest_traincheck import catalog

    finding = _finding(code="TRN101", message="`optimizer.step()` applies gradients that are never cleared.",
                       fixable=False, fix_title="Insert `optimizer.zero_grad()` at the top of the loop body")
    out = render(_summary(finding), "full", FormatOptions())
    assert "Insert" not in out  # no fix title: no flag applies it
    assert f"= help: {catalog.get('TRN101').fix}" in out


def test_full_help_names_the_flag_of_an_unsafe_fix() -> None:
    finding = _finding(code="TRN101", fixable=False, unsafe_fix=True,
                       fix_title="Insert `optimizer.zero_grad()` at the top of the loop body")
    out = render(_summary(finding), "full", FormatOptions())
    assert "= help: Insert `optimizer.zero_grad()` at the top of the loop body (--fix --unsafe-fixes)" in out


def test_full_without_source_still_prints_the_finding() -> None:
    out = render(_summary(_finding()), "full", FormatOptions(sources=None))
    assert out.startswith("pkg/train.py:2:1: TRN107")


def test_full_through_cli(project: Path) -> None:
    proc = run("lint", "--no-cache", "--output-format", "full", "pkg/train.py", cwd=project)
    assert proc.returncode == 1, proc.stderr
    assert "2 | torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)" in proc.stdout
    assert "^^^^" in proc.stdout


# -- json -------------------------------------------------------------------------------


def test_json_has_exactly_the_documented_keys() -> None:
    data = json.loads(render(_summary(_finding()), "json", FormatOptions()))
    assert data == [{
        "path": "pkg/train.py", "line": 2, "column": 1, "end_line": 2, "end_column": 49, "code": "TRN107",
        "name": "deprecated-clip-grad-norm", "message": "`clip_grad_norm` is deprecated.", "fixable": True,
    }]


def test_json_empty_is_an_empty_array() -> None:
    assert json.loads(render(_summary(), "json", FormatOptions())) == []


def test_json_through_cli_prints_only_json(project: Path) -> None:
    proc = run("lint", "--no-cache", "--output-format", "json", "pkg", cwd=project)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)  # nothing but the array on stdout
    assert all(set(item) == JSON_KEYS for item in data)
    assert [(d["path"], d["code"]) for d in data] == [("pkg/broken.py", "TRN000"), ("pkg/train.py", "TRN107")]
    assert data[1]["line"] == 2 and data[1]["column"] == 1 and data[1]["fixable"] is True
    assert data[0]["fixable"] is False


def test_json_with_statistics_and_quiet_is_still_pure_json(project: Path) -> None:
    proc = run("lint", "--no-cache", "--output-format", "json", "--statistics", "--quiet", "pkg", cwd=project)
    assert isinstance(json.loads(proc.stdout), list)


# -- github -------------------------------------------------------------------------------


def test_github_annotation() -> None:
    out = render(_summary(_finding()), "github", FormatOptions())
    assert out == (
        "::error file=pkg/train.py,line=2,col=1,endLine=2,endColumn=49,"
        "title=TRN107 deprecated-clip-grad-norm::TRN107 `clip_grad_norm` is deprecated.\n"
    )


def test_github_escapes_properties_and_message() -> None:
    finding = _finding(path="we:ird,dir/100%.py", message="50% done\nsecond line: a, b\r")
    out = render(_summary(finding), "github", FormatOptions())
    assert out.count("\n") == 1  # one workflow command, even for a multi-line message
    props, _, message = out.rstrip("\n").partition("::")[2].partition("::")
    assert "file=we%3Aird%2Cdir/100%25.py," in props
    assert message == "TRN107 50%25 done%0Asecond line: a, b%0D"  # `:` and `,` stay in the message


@pytest.mark.parametrize(("severity", "command"), [("error", "error"), ("warning", "warning"), ("info", "notice")])
def test_github_levels(severity: str, command: str) -> None:
    out = render(_summary(_finding(severity=severity)), "github", FormatOptions())
    assert out.startswith(f"::{command} ")


def test_github_clean_prints_nothing() -> None:
    assert render(_summary(), "github", FormatOptions()) == ""


# -- sarif ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_validator():  # type: ignore[no-untyped-def]
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _validate(validator, log: dict) -> None:  # type: ignore[no-untyped-def,type-arg]
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_sarif_schema_file_is_the_official_one() -> None:
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")


def test_sarif_through_cli_validates(project: Path, sarif_validator) -> None:  # type: ignore[no-untyped-def]
    proc = run("lint", "--no-cache", "--output-format", "sarif", "pkg", cwd=project)
    assert proc.returncode == 1, proc.stderr
    log = json.loads(proc.stdout)  # nothing else on stdout
    _validate(sarif_validator, log)
    assert log["version"] == "2.1.0"
    run_ = log["runs"][0]
    driver = run_["tool"]["driver"]
    assert driver["name"] == "traincheck"
    assert driver["version"]
    assert driver["informationUri"].startswith("https://")
    ids = [rule["id"] for rule in driver["rules"]]
    assert "TRN107" in ids and "TRN000" in ids
    assert len(ids) == len(set(ids))
    results = {r["ruleId"]: r for r in run_["results"]}
    assert set(results) == {"TRN000", "TRN107"}
    for result in run_["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] == "error"
        assert result["message"]["text"]
    loc = results["TRN107"]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "pkg/train.py", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": 2, "startColumn": 1, "endLine": 2, "endColumn": 55}
    assert results["TRN000"]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "pkg/broken.py"


def test_sarif_rule_descriptors_carry_the_docs(project: Path) -> None:
    from pytest_traincheck.lint.formats import sarif_log

    log = sarif_log(_summary(_finding(), _finding(code="TRN000", message="SyntaxError: x", fixable=False)))
    rules = {rule["id"]: rule for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    trn107 = rules["TRN107"]
    assert trn107["name"] == "deprecated-clip-grad-norm"
    assert trn107["shortDescription"]["text"] == "Flags `clip_grad_norm`, the deprecated spelling of `clip_grad_norm_`."
    assert trn107["fullDescription"]["text"]
    assert "\n## What it does\n" in trn107["help"]["markdown"]  # the rule's own docs, dedented
    assert "\n## Use instead\n" in trn107["help"]["markdown"]
    assert trn107["help"]["text"]
    assert trn107["defaultConfiguration"] == {"level": "error"}
    trn000 = rules["TRN000"]  # no rule class: the catalogue's summary and fix
    assert trn000["name"] == "syntax-error"
    assert trn000["shortDescription"]["text"] == "The file could not be parsed."
    assert "Fix the syntax error" in trn000["help"]["text"]
    assert "Fix the syntax error" in trn000["help"]["markdown"]


def test_sarif_clean_run_validates(sarif_validator) -> None:  # type: ignore[no-untyped-def]
    from pytest_traincheck.lint.formats import sarif_log

    log = sarif_log(_summary())
    _validate(sarif_validator, log)
    assert log["runs"][0]["results"] == []
    assert log["runs"][0]["tool"]["driver"]["rules"]  # every registered rule is described


def test_sarif_odd_paths_are_valid_uris(sarif_validator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pytest_traincheck.lint.formats import sarif_log

    log = sarif_log(_summary(
        _finding(path="dir with space/100% ñ.py", severity="warning"),
        _finding(path=str(tmp_path / "abs.py"), severity="info"),
        _finding(path="-", code="TRN001", fixable=False),
    ))
    _validate(sarif_validator, log)
    results = log["runs"][0]["results"]
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"] for r in results]
    assert uris[0] == {"uri": "dir%20with%20space/100%25%20%C3%B1.py", "uriBaseId": "%SRCROOT%"}
    assert uris[1]["uri"].startswith("file:///") and "uriBaseId" not in uris[1]
    assert [r["level"] for r in results] == ["warning", "note", "error"]


# -- junit -------------------------------------------------------------------------------


def test_junit_through_cli(project: Path) -> None:
    proc = run("lint", "--no-cache", "--output-format", "junit", "pkg", cwd=project)
    assert proc.returncode == 1, proc.stderr
    root = ET.fromstring(proc.stdout)  # nothing else on stdout
    suite = root.find("testsuite")
    assert suite is not None
    assert root.get("tests") == suite.get("tests") == "3"  # files checked
    assert root.get("failures") == suite.get("failures") == "2"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) >= {"pkg/train.py", "pkg/broken.py"}
    failure = cases["pkg/train.py"].find("failure")
    assert failure is not None
    assert "TRN107" in (failure.get("message") or "")
    assert "pkg/train.py:2:1: TRN107 `clip_grad_norm` is deprecated" in (failure.text or "")


def test_junit_clean_and_listed_sources() -> None:
    root = ET.fromstring(render(_summary(files=4), "junit", FormatOptions()))
    assert root.get("tests") == "4" and root.get("failures") == "0"
    listed = render(_summary(_finding(), files=2), "junit", FormatOptions(sources={"a.py": "", "pkg/train.py": ""}))
    cases = ET.fromstring(listed).find("testsuite").findall("testcase")  # type: ignore[union-attr]
    assert [c.get("name") for c in cases] == ["a.py", "pkg/train.py"]
    assert cases[0].find("failure") is None and cases[1].find("failure") is not None


def test_junit_escapes_markup_and_control_characters() -> None:
    finding = _finding(path="a&b<c>.py", message='bad "quote" <tag> & \x0b control')
    root = ET.fromstring(render(_summary(finding), "junit", FormatOptions()))  # parses: well-formed
    case = root.find("testsuite/testcase")
    assert case is not None and case.get("name") == "a&b<c>.py"
    assert '<tag> & \ufffd control' in (case.find("failure").text or "")  # type: ignore[union-attr]

"""One file costs at most one finding: deep nesting, parser crashes, files CPython rejects, unreadable paths."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_traincheck.config import LintConfig
from pytest_traincheck.lint import analysis, engine
from tests.test_bad_inputs import lint

GOOD = "import torch\nouter = torch.ger(a, b)\n"  # one TRN901 finding


def chain(depth: int, joiner: str = " +\\\n    ") -> str:
    """A valid file holding one expression ``depth`` operators deep, split over lines."""
    return "import torch\nx = " + joiner.join(["a"] * (depth + 1)) + "\ny = torch.ger(a, b)\n"


def codes_by_file(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].startswith("TRN"):
            out.setdefault(parts[0].split(":", 1)[0], []).append(parts[1])
    return out


@pytest.mark.parametrize("depth", [350, 1000])
def test_a_deep_expression_chain_costs_one_finding_not_the_run(tmp_path: Path, depth: int) -> None:
    (tmp_path / "deep.py").write_text(chain(depth))
    (tmp_path / "good.py").write_text(GOOD)
    proc = lint("deep.py", "good.py", cwd=tmp_path, timeout=240)
    assert proc.returncode == 1, proc.stderr
    found = codes_by_file(proc.stdout)
    assert found == {"deep.py": ["TRN000"], "good.py": ["TRN901"]}, proc.stdout
    assert "nested" in proc.stdout.split("deep.py:", 1)[1].splitlines()[0]


@pytest.mark.parametrize("kind", ["plus", "not", "attribute"])
def test_chains_deeper_than_cpython_allows_are_refused_before_libcst(tmp_path: Path, kind: str) -> None:
    body = {"plus": chain(5000), "not": "import torch\nx = " + "not \\\n" * 20000 + "a\n",
            "attribute": "import torch\nx = a" + "\\\n    .b" * 5000 + "\n"}[kind]
    (tmp_path / "deep.py").write_text(body)
    (tmp_path / "good.py").write_text(GOOD)
    proc = lint("deep.py", "good.py", cwd=tmp_path, timeout=240)  # libcst alone takes minutes or SIGSEGVs here
    assert codes_by_file(proc.stdout) == {"deep.py": ["TRN000"], "good.py": ["TRN901"]}, proc.stdout + proc.stderr


def test_a_worker_killed_by_the_parser_costs_its_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the nesting bound switched off, libcst's native parser overflows its stack on this file
    # (SIGSEGV) and the worker dies: the pool must be rebuilt and the other files linted.
    monkeypatch.setattr(analysis, "MAX_DEPTH", 10**9)
    monkeypatch.setattr(analysis, "cpython_problem", lambda path, data: (None, None))
    (tmp_path / "crash.py").write_text("import torch\nx = " + "not \\\n" * 30000 + "a\n")
    files = []
    for i in range(6):
        (tmp_path / f"good{i}.py").write_text(GOOD)
        files.append((tmp_path / f"good{i}.py", f"good{i}.py"))
    files.insert(3, (tmp_path / "crash.py", "crash.py"))
    results = engine.run_files(files, engine.Settings(("TRN901",)), jobs=2)
    by_name = {r.path: [f.code for f in r.findings] for r in results}
    assert by_name.pop("crash.py") == ["TRN000"]
    assert by_name == {f"good{i}.py": ["TRN901"] for i in range(6)}
    crash = next(r for r in results if r.path == "crash.py").findings[0]
    assert "crashed" in crash.message


@pytest.mark.parametrize("source", [
    b"def f(:\n    pass\n",
    b'print "hello"\n',
    b"return 1\n",
    random.Random(0).randbytes(400),
])
def test_every_file_cpython_rejects_is_reported(tmp_path: Path, source: bytes) -> None:
    (tmp_path / "bad.py").write_bytes(source)  # no prefilter word in any of them
    (tmp_path / "good.py").write_text(GOOD)
    proc = lint("bad.py", "good.py", cwd=tmp_path)
    assert codes_by_file(proc.stdout) == {"bad.py": ["TRN000"], "good.py": ["TRN901"]}, proc.stdout


def test_valid_python_libcst_cannot_parse_is_not_called_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("import torch\n(x): int = 1\n")
    proc = lint("ok.py", cwd=tmp_path)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("ok.py"))
    assert "TRN002" in line and "SyntaxError" not in line and "syntax error" not in line.lower(), line


def test_newer_python_syntax_that_libcst_reads_is_linted(tmp_path: Path) -> None:
    # PEP 695 (Python 3.12): the running Python may reject it; libcst reads it, so it is linted.
    (tmp_path / "new.py").write_text("import torch\ntype Vector = list[float]\nouter = torch.ger(a, b)\n")
    proc = lint("new.py", cwd=tmp_path)
    assert codes_by_file(proc.stdout) == {"new.py": ["TRN901"]}, proc.stdout


def test_a_missing_path_is_reported_and_the_others_are_linted(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(GOOD)
    proc = lint("nope.py", "good.py", cwd=tmp_path)
    assert codes_by_file(proc.stdout) == {"nope.py": ["TRN000"], "good.py": ["TRN901"]}, proc.stdout + proc.stderr
    assert "no such file" in proc.stdout


def test_an_unreadable_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg" / "locked").mkdir(parents=True)
    (tmp_path / "pkg" / "locked" / "x.py").write_text(GOOD)
    (tmp_path / "pkg" / "good.py").write_text(GOOD)
    real_scandir = os.scandir

    def scandir(path: "os.PathLike[str] | str" = ".") -> object:
        if Path(path).name == "locked":  # root reads through chmod 000: refuse it here instead
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    summary, _, _ = engine.lint_paths([tmp_path / "pkg"], LintConfig(root=tmp_path))
    found = sorted((Path(f.path).name, f.code) for f in summary.findings)
    assert found == [("good.py", "TRN901"), ("locked", "TRN000")], found
    assert any("Permission denied" in f.message for f in summary.findings)


@pytest.mark.parametrize("kind", ["and", "import", "from"])
def test_chains_flat_for_cpython_but_deep_for_libcst_cost_one_finding_at_j1(tmp_path: Path, kind: str) -> None:
    # CPython keeps these shallow (one BoolOp, one dotted name); libcst nests them once per
    # operator or dot, and its native parser overflowed its stack (SIGSEGV) on 9,000 of them.
    body = {"and": "import torch\nx = (a\n" + " and a\n" * 9000 + ")\n",
            "import": "import torch\nimport " + ".".join(["a"] * 9000) + "\n",
            "from": "import torch\nfrom " + ".".join(["a"] * 9000) + " import b\n"}[kind]
    (tmp_path / "deep.py").write_text(body)
    (tmp_path / "good.py").write_text(GOOD)
    proc = lint("-j1", "deep.py", "good.py", cwd=tmp_path, timeout=240)
    assert codes_by_file(proc.stdout) == {"deep.py": ["TRN000"], "good.py": ["TRN901"]}, proc.stdout + proc.stderr
    assert "nested more than" in proc.stdout


def test_a_short_boolean_chain_is_still_linted() -> None:
    tree = __import__("ast").parse("x = a and b and c\nimport torch.nn.functional\n")
    assert analysis.ast_depth(tree, analysis.MAX_DEPTH) < 10


# Switches the nesting bound off in the command line's process, so that libcst's native parser
# overflows its stack on crash.py: the one-job run must lose that file only.
UNBOUNDED = ("import sys\nfrom pytest_traincheck.lint import analysis\nanalysis.MAX_DEPTH = 10**9\n"
             "analysis.cpython_problem = lambda path, data: (None, None)\n"
             "from pytest_traincheck.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def test_a_native_parser_crash_at_j1_costs_its_file_only(tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text("import torch\nx = " + "not \\\n" * 30000 + "a\n")
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "unbounded.py").write_text(UNBOUNDED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(engine.__file__).parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "unbounded.py", "lint", "--no-cache", "--isolated", "-j1", "crash.py",
                           "good.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-500:])
    assert codes_by_file(proc.stdout) == {"crash.py": ["TRN000"], "good.py": ["TRN901"]}, proc.stdout
    assert "the parser crashed on this file" in proc.stdout

"""TRN208 decides from the shipped name table: no linting process imports torch (issue 12, item 10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_traincheck.analyses import torch_table
from pytest_traincheck.lint.testing import lint_source

MISSING = "import torch\nfrom torch.nn import NotALayer\ny = torch.einsm('ij->ji', x)\nz = torch.brand_new_op(x)\n"

# A stand-in `torch` first on the path: any process that imports torch leaves a file named by its pid.
SPY = "import os, pathlib\npathlib.Path(os.environ['SPY_DIR'], str(os.getpid())).touch()\n"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_linting_names_missing_from_the_table_imports_torch_in_no_process(tmp_path: Path, jobs: str) -> None:
    if torch_table.installed_version() != torch_table.torch_names()["torch_version"]:
        pytest.skip("the installed torch is not the shipped table's release")
    spy, seen, project = tmp_path / "spy", tmp_path / "seen", tmp_path / "project"
    for folder in (spy / "torch", seen, project):
        folder.mkdir(parents=True)
    (spy / "torch" / "__init__.py").write_text(SPY)
    for i in range(4):  # enough files for a worker pool
        (project / f"train{i}.py").write_text(MISSING)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(spy), src]), "SPY_DIR": str(seen)}
    done = subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", "--isolated", "--no-cache",
                           "--select", "TRN208", "-j", jobs, str(project)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("TRN208") == 3 * 4, done.stdout  # NotALayer, einsm, brand_new_op in each file
    assert list(seen.iterdir()) == []  # no process imported torch


def test_another_installed_release_is_asked_once_in_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []

    def names(modules: tuple[str, ...]) -> dict[str, frozenset[str]]:
        asked.append(modules)
        return {"torch": frozenset({"einsum", "brand_new_op"}), "torch.nn": frozenset({"Linear"})}

    monkeypatch.setattr(torch_table, "installed_version", lambda: "99.0.0")
    monkeypatch.setattr(torch_table, "_installed_names", names)
    findings, _ = lint_source(MISSING, ["TRN208"])
    # brand_new_op exists in the installed (newer) torch: not reported; the two typos still are.
    assert [(f.line, f.code) for f in findings] == [(2, "TRN208"), (3, "TRN208")]
    assert "did you mean `torch.einsum`?" in findings[1].message
    assert asked  # settled by asking the installed torch, not by importing it in this process


def test_an_installed_torch_that_cannot_be_asked_reports_nothing_it_cannot_confirm(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_table, "installed_version", lambda: "99.0.0")
    monkeypatch.setattr(torch_table, "_installed_names", lambda modules: None)  # a broken install
    findings, _ = lint_source(MISSING, ["TRN208"])
    assert findings == []


def test_the_child_process_lists_the_installed_torchs_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "site" / "torch"
    (fake / "nn").mkdir(parents=True)
    (fake / "__init__.py").write_text("def brand_new_op():\n    pass\n")
    (fake / "nn" / "__init__.py").write_text("class Linear:\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))  # the child imports this torch, not the real one
    names = torch_table._names_in_child(("torch", "torch.nn"))
    assert names is not None and "Linear" in names["torch.nn"] and "brand_new_op" in names["torch"]
    assert "nn" in names["torch"]  # submodules count as names
    assert torch_table._names_in_child(("torch.no_such_module",)) is None  # a failing child: undecided

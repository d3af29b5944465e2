"""Jupyter notebooks: cells linted as one module, findings per cell, fixes spliced into the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_traincheck.cli import main
from pytest_traincheck.lint.notebook import NotebookError, python_lines, read

DATA = Path(__file__).resolve().parents[1] / "data"

SETUP = ("import torch\nimport torch.nn as nn\nmodel = nn.Linear(3, 2)\ncriterion = nn.CrossEntropyLoss()\n"
         "opt = torch.optim.SGD(model.parameters(), lr=0.1)\nx, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])")
LOOP = ("for step in range(3):\n    opt.zero_grad()\n    loss = criterion(model(x).softmax(1), y)\n"
        "    loss.backward()\n    opt.step()\n    torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)")


def cell(source: str, kind: str = "code", as_list: bool = True, **extra: Any) -> dict[str, Any]:
    """Return a v4 cell the way Jupyter stores it."""
    body: Any = source.splitlines(keepends=True) if as_list else source
    out: dict[str, Any] = {"cell_type": kind, "id": f"c{len(source)}{kind}", "metadata": extra.pop("metadata", {}),
                           "source": body}
    if kind == "code":
        out.update(execution_count=extra.pop("execution_count", None), outputs=extra.pop("outputs", []))
    return out


def notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
            "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def write_jupyter(path: Path, document: dict[str, Any]) -> bytes:
    """Write as Jupyter does: indent 1, sorted keys, UTF-8, final newline."""
    data = (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    path.write_bytes(data)
    return data


def lint(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["lint", "--no-cache", *args])
    return code, capsys.readouterr().out


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.traincheck]\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_findings_name_the_cell_and_its_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jupyter(project / "nb.ipynb", notebook(cell("# Title", "markdown"), cell(SETUP), cell(LOOP)))
    code, out = lint(capsys, "nb.ipynb")
    assert code == 1
    assert "nb.ipynb:cell 3:line 3:12: TRN201 " in out
    assert "nb.ipynb:cell 3:line 6:5: TRN107 [*] " in out
    assert "TRN101" not in out  # zero_grad is there: the loop in cell 3 sees it


def test_cells_are_one_module_in_order(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A loop in one cell and the optimizer defined in an earlier one: the rule sees both."""
    loop = "for step in range(3):\n    loss = criterion(model(x), y)\n    loss.backward()\n    opt.step()\n"
    write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell("print(1)"), cell(loop)))
    code, out = lint(capsys, "nb.ipynb")
    assert "nb.ipynb:cell 3:line 1:1: TRN101 " in out
    write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell("x = x + 1")))
    assert lint(capsys, "nb.ipynb") == (0, "All checks passed!\n")


def test_json_sarif_and_github_point_at_the_right_place(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell(LOOP)))
    file_lines = data.decode().splitlines()
    _, out = lint(capsys, "nb.ipynb", "--output-format", "json")
    (found,) = [f for f in json.loads(out) if f["code"] == "TRN201"]
    assert (found["cell"], found["line"], found["column"]) == (2, 3, 12)
    _, out = lint(capsys, "nb.ipynb", "--output-format", "sarif")
    log = json.loads(out)
    import jsonschema

    jsonschema.validate(log, json.loads((DATA / "sarif-schema-2.1.0.json").read_text()))
    (result,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "TRN201"]
    region = result["locations"][0]["physicalLocation"]["region"]
    assert "criterion(model(x).softmax(1), y)" in file_lines[region["startLine"] - 1]
    assert result["properties"] == {"cell": 2, "cellLine": 3, "cellColumn": 12}
    _, out = lint(capsys, "nb.ipynb", "--output-format", "github")
    (line,) = [l for l in out.splitlines() if "TRN201" in l and l.startswith("::error")]
    assert f"file=nb.ipynb,line={region['startLine']}," in line and "cell 2, line 3" in line


def test_magics_shell_escapes_and_help_are_skipped(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ipython = ("%matplotlib inline\n!pip list | head\nfiles = !ls\nmodel?\n?opt\nfor i in range(2):\n"
               "    %time x = x + 1\nx = (1\n     % 2)\n")
    write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell(ipython), cell("%%bash\nfor f in *; do\n  echo $f\ndone"),
                                                 cell("torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)")))
    code, out = lint(capsys, "nb.ipynb")
    assert "TRN000" not in out
    assert out.splitlines()[0].startswith("nb.ipynb:cell 4:line 1:1: TRN107 ")


def test_python_lines_keeps_continuations() -> None:
    """A `%` or `!` that continues an open bracket or string is Python, not a magic."""
    nb = read(json.dumps(notebook(cell("x = (1\n% 2)\ns = '''\n!not a shell\n'''\n!echo hi\n"))).encode())
    assert python_lines(nb.cells[0]) == ["x = (1", "% 2)", "s = '''", "!not a shell", "'''",
                                         "pass  # traincheck: ipython"]


def test_noqa_works_per_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop = LOOP.replace("softmax(1), y)", "softmax(1), y)  # noqa: TRN201")
    write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell(loop)))
    _, out = lint(capsys, "nb.ipynb")
    assert "TRN201" not in out and "cell 2:line 6:5: TRN107" in out


def _spans_outside(before: bytes, after: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Return the common prefix and suffix of two byte strings, and what differs in each."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1
    return before[:start], before[len(before) - end:], before[start:len(before) - end], after[start:len(after) - end]


def test_fix_round_trip_keeps_every_byte_outside_the_changed_cell(project: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    outputs = [{"name": "stdout", "output_type": "stream", "text": ["loss 2.30\n", "loss 2.29\n"]},
               {"data": {"image/png": "iVBORw0KGgo=", "text/plain": ["<Figure>"]}, "metadata": {},
                "output_type": "display_data"}]
    document = notebook(cell("# Training — naïve", "markdown"), cell(SETUP, execution_count=1),
                        cell("%matplotlib inline\n" + LOOP + "\n", execution_count=2, outputs=outputs,
                             metadata={"tags": ["train"], "collapsed": False}),
                        cell("print(loss)", execution_count=3))
    before = write_jupyter(project / "nb.ipynb", document)
    code, out = lint(capsys, "nb.ipynb", "--fix")
    after = (project / "nb.ipynb").read_bytes()
    assert "Fixed 1" in out
    prefix, suffix, old, new = _spans_outside(before, after)
    assert (old, new) == (b"", b"_") and prefix.endswith(b"clip_grad_norm") and suffix.startswith(b"(model")
    fixed = json.loads(after)
    assert fixed["cells"][2]["outputs"] == outputs and fixed["cells"][2]["metadata"] == {"tags": ["train"],
                                                                                         "collapsed": False}
    assert fixed["cells"][2]["source"][0] == "%matplotlib inline\n"
    assert [c["source"] for c in fixed["cells"][:2]] == [c["source"] for c in document["cells"][:2]]
    assert list(project.iterdir()) == [project / "nb.ipynb", project / "pyproject.toml"] or \
        sorted(p.name for p in project.iterdir()) == ["nb.ipynb", "pyproject.toml"]  # no temp file left


def test_fix_keeps_a_foreign_layout(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A notebook not written by Jupyter (indent 4, key order, string sources) keeps its layout."""
    document = notebook(cell(SETUP, as_list=False), cell(LOOP, as_list=False, execution_count=7))
    document = {"nbformat": 4, "nbformat_minor": 2, "metadata": document["metadata"], "cells": document["cells"]}
    before = json.dumps(document, indent=4).encode()  # ASCII escapes, no final newline
    (project / "nb.ipynb").write_bytes(before)
    lint(capsys, "nb.ipynb", "--fix", "--unsafe-fixes")
    after = (project / "nb.ipynb").read_bytes()
    _, _, old, new = _spans_outside(before, after)
    assert b"softmax(1)" in old and b"softmax" not in new and b"clip_grad_norm_" in new
    assert after.startswith(b'{\n    "nbformat": 4,') and not after.endswith(b"\n")
    assert isinstance(json.loads(after)["cells"][1]["source"], str)


def test_unsafe_fix_that_adds_a_line_keeps_jupyter_layout(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop = "for step in range(3):\n    loss = criterion(model(x), y)\n    loss.backward()\n    opt.step()"
    before = write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell(loop)))
    lint(capsys, "nb.ipynb", "--fix", "--unsafe-fixes")
    after = (project / "nb.ipynb").read_bytes()
    assert json.loads(after)["cells"][1]["source"][:2] == ["for step in range(3):\n", "    opt.zero_grad()\n"]
    # the rewritten value is laid out exactly as Jupyter would write the whole file
    assert after == (json.dumps(json.loads(after), indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
    assert before != after


def test_cell_magic_survives_a_fix(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jupyter(project / "nb.ipynb", notebook(cell("%%writefile x.py\nprint( 'hi' )"), cell(SETUP),
                                                 cell("!nvidia-smi\n" + LOOP)))
    lint(capsys, "nb.ipynb", "--fix")
    cells = json.loads((project / "nb.ipynb").read_text())["cells"]
    assert cells[0]["source"] == ["%%writefile x.py\n", "print( 'hi' )"]
    assert cells[2]["source"][0] == "!nvidia-smi\n" and "clip_grad_norm_(" in cells[2]["source"][-1]


@pytest.mark.parametrize("content, message", [
    (b'{"cells": [', "notebook is not valid JSON"),
    (b'{"worksheets": [], "nbformat": 3}', "not a Jupyter notebook with a `cells` list (nbformat 3"),
    (b"\xff\xfe", "notebook is not UTF-8"),
    (b"[1, 2]", "not a Jupyter notebook"),
])
def test_a_broken_notebook_is_one_trn000(project: Path, capsys: pytest.CaptureFixture[str],
                                         content: bytes, message: str) -> None:
    (project / "bad.ipynb").write_bytes(content)
    code, out = lint(capsys, "bad.ipynb", "--fix")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 2 and "TRN000" in lines[0] and message in lines[0]
    assert (project / "bad.ipynb").read_bytes() == content
    with pytest.raises(NotebookError):
        read(content)


def test_a_syntax_error_in_a_cell_points_at_it(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell("x = 1\ndef f(:\n    pass")))
    _, out = lint(capsys, "nb.ipynb")
    assert out.startswith(("nb.ipynb:cell 2:line 2:", "nb.ipynb:cell 2:line 3:")) and "TRN000" in out
    assert "@" not in out  # libcst's position is in module coordinates: dropped


def test_folders_include_notebooks_but_not_checkpoints(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "nbs" / ".ipynb_checkpoints").mkdir(parents=True)
    for path in (project / "nbs" / "a.ipynb", project / "nbs" / ".ipynb_checkpoints" / "a-checkpoint.ipynb"):
        write_jupyter(path, notebook(cell(SETUP), cell(LOOP)))
    _, out = lint(capsys, ".")
    assert "nbs/a.ipynb:cell 2:line 6:5: TRN107" in out and "checkpoint" not in out


def test_the_cache_keeps_cells(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jupyter(project / "nb.ipynb", notebook(cell(SETUP), cell(LOOP)))
    first = main(["lint", "nb.ipynb", "--output-format", "json"]), capsys.readouterr().out
    second = main(["lint", "nb.ipynb", "--output-format", "json"]), capsys.readouterr().out
    assert first == second and '"cell": 2' in first[1]
    assert any((project / ".traincheck_cache").rglob("*"))


def test_the_seed_guide_notebook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/notebooks: the seed guide's workflow with its mistakes, as the README shows it."""
    example = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "pytorch_from_scratch.ipynb"
    code = main(["lint", "--no-cache", "--output-format", "json", str(example)])
    before = json.loads(capsys.readouterr().out)
    found = [(f["cell"], f["line"], f["code"]) for f in before]
    assert code == 1
    assert found == [(5, 4, "TRN202"), (11, 5, "TRN201"), (11, 8, "TRN107"), (14, 3, "TRN501")]
    copy = tmp_path / "nb.ipynb"
    copy.write_bytes(example.read_bytes())
    main(["lint", "--no-cache", "--fix", str(copy)])
    capsys.readouterr()
    main(["lint", "--no-cache", "--output-format", "json", str(copy)])
    left = {f["code"] for f in json.loads(capsys.readouterr().out)}
    fixable = {f["code"] for f in before if f["fixable"]}
    assert fixable and left == {f["code"] for f in before} - fixable  # the safe fixes applied, nothing else
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(str(copy), as_version=4))

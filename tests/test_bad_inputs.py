"""Hostile and unusual inputs: each gives one clear line or a TRN000 finding, never a traceback or a hang."""

from __future__ import annotations

import re
import os
import subprocess
import sys
from pathlib import Path

import pytest


DEPRECATED = "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n"
FIXED = "import torch\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytest_traincheck`` in ``cwd``; a crash or hang fails the calling test."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    try:
        return subprocess.run([sys.executable, "-m", "pytest_traincheck", *args], cwd=cwd, capture_output=True,
                              text=True, env=env, timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired:
        pytest.fail(f"traincheck {' '.join(args)} did not finish within {timeout} s")


def lint(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``traincheck lint --no-cache ARGS`` and check it neither crashed nor printed a traceback."""
    proc = run("lint", "--no-cache", *args, cwd=cwd, timeout=timeout)
    assert proc.returncode in (0, 1, 2), f"crashed with {proc.returncode}: {proc.stderr[-500:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr
    return proc


from tests.conftest import Runner


@pytest.fixture()
def tc(lint_runner: Runner) -> Runner:
    """Run ``traincheck lint --no-cache ARGS`` in this process."""
    return lint_runner




def only_finding(proc: subprocess.CompletedProcess[str]) -> str:
    """Return the one finding line of a concise run."""
    lines = [line for line in proc.stdout.splitlines() if ": TRN" in line]
    assert len(lines) == 1, proc.stdout
    return lines[0]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on stderr naming ``words``."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr


# -- bytes that are not (UTF-8) Python text ------------------------------------------------------


def test_binary_file_named_py(tmp_path: Path) -> None:
    (tmp_path / "weights.py").write_bytes(b"\x80\x02ctorch\x00\x01\x02\xff\xfe" * 100)
    proc = lint("weights.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert only_finding(proc).startswith("weights.py:1:1: TRN000 ")
    assert "binary" in proc.stdout


def test_binary_file_without_trigger_words_is_skipped(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "blob.py").write_bytes(bytes(range(256)) * 10)
    proc = tc("blob.py", cwd=tmp_path)
    assert proc.returncode in (0, 1)


def test_non_utf8_file(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "a.py").write_bytes(b"import torch\nname = 'caf\xe9 \xff'\n")
    proc = tc("a.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert re.match(r"a\.py:2:\d+: TRN000 cannot decode", only_finding(proc))  # CPython names the byte


def test_latin1_with_coding_declaration_is_linted_and_fixed_in_latin1(tmp_path: Path, tc: Runner) -> None:
    source = "# -*- coding: latin-1 -*-\nimport torch\nname = 'café'\ntorch.nn.utils.clip_grad_norm(p, 1)\n"
    target = tmp_path / "a.py"
    target.write_bytes(source.encode("latin-1"))
    assert only_finding(tc("a.py", cwd=tmp_path)).startswith("a.py:4:1: TRN107")
    assert tc("--fix", "a.py", cwd=tmp_path).returncode == 0
    assert target.read_bytes() == source.replace("clip_grad_norm(", "clip_grad_norm_(").encode("latin-1")


def test_utf8_bom_is_kept(tmp_path: Path, tc: Runner) -> None:
    target = tmp_path / "a.py"
    target.write_bytes(b"\xef\xbb\xbf" + DEPRECATED.encode())
    assert only_finding(tc("a.py", cwd=tmp_path)).startswith("a.py:2:1: TRN107")
    assert tc("--fix", "a.py", cwd=tmp_path).returncode == 0
    assert target.read_bytes() == b"\xef\xbb\xbf" + FIXED.encode()


def test_crlf_line_endings_survive_fix(tmp_path: Path, tc: Runner) -> None:
    target = tmp_path / "a.py"
    target.write_bytes(DEPRECATED.replace("\n", "\r\n").encode() + b"x = 1  # caf\xc3\xa9\r\n")
    proc = tc("--fix", "a.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert target.read_bytes() == FIXED.replace("\n", "\r\n").encode() + b"x = 1  # caf\xc3\xa9\r\n"


def test_diff_of_a_crlf_file_changes_nothing(tmp_path: Path, tc: Runner) -> None:
    target = tmp_path / "a.py"
    data = DEPRECATED.replace("\n", "\r\n").encode()
    target.write_bytes(data)
    proc = tc("--diff", "a.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert "+torch.nn.utils.clip_grad_norm_(" in proc.stdout
    assert target.read_bytes() == data


@pytest.mark.parametrize("content", [b"", b"\n", b"   \n\n", b"# just a comment about torch\n", b"\xef\xbb\xbf"])
def test_empty_and_trivial_files(tmp_path: Path, content: bytes, tc: Runner) -> None:
    (tmp_path / "a.py").write_bytes(content)
    proc = tc("a.py", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "All checks passed!\n")


# -- syntax the parser refuses -------------------------------------------------------------------


def test_python2_print_is_trn000_with_its_line(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "old.py").write_text("import torch\n\nprint 'loss', loss\n")
    proc = tc("old.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert only_finding(proc).startswith("old.py:3:1: TRN000 SyntaxError")


def test_syntax_error_does_not_stop_other_files(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "a.py").write_text("import torch\ndef f(:\n")
    (tmp_path / "b.py").write_text(DEPRECATED)
    proc = tc(".", cwd=tmp_path)
    assert proc.returncode == 1
    codes = [line.split()[1] for line in proc.stdout.splitlines() if ": TRN" in line]
    assert codes == ["TRN000", "TRN107"]


def test_moderately_nested_expression_is_linted(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "a.py").write_text("import torch\nx = " + "(" * 150 + "1" + ")" * 150 + "\n" + DEPRECATED)
    assert "TRN107" in only_finding(tc("a.py", cwd=tmp_path))


@pytest.mark.parametrize("opening, closing", [("(", ")"), ("[", "]")])
def test_deeply_nested_expression_is_trn000_not_a_crash(tmp_path: Path, opening: str, closing: str) -> None:
    (tmp_path / "deep.py").write_text("import torch\nx = " + opening * 5000 + closing * 5000 + "\n")
    proc = lint("deep.py", cwd=tmp_path, timeout=30)
    assert proc.returncode == 1
    assert only_finding(proc).startswith("deep.py:")
    assert "TRN000" in proc.stdout


def test_long_operator_chain_finishes(tmp_path: Path) -> None:
    (tmp_path / "chain.py").write_text("import torch\nx = " + "1 + " * 5000 + "1\n")
    lint("chain.py", cwd=tmp_path, timeout=60)


# -- size -----------------------------------------------------------------------------------------


def _big_source(size: int, body: str) -> str:
    lines, total, i = [], 0, 0
    while total < size:
        line = body.format(i=i)
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines)


def test_5mb_file_without_trigger_words_is_fast(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "big.py").write_text(_big_source(5 * 1024 * 1024, "def f{i}(x):\n    return x * {i}\n"))
    proc = tc("big.py", cwd=tmp_path)
    assert proc.returncode == 0


def test_5mb_torch_file_finishes(tmp_path: Path) -> None:
    body = "def f{i}(model, x):\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    return x\n"
    (tmp_path / "big.py").write_text("import torch\n" + _big_source(5 * 1024 * 1024, body))
    lint("big.py", cwd=tmp_path, timeout=120)


def test_file_over_the_size_limit_is_trn000(tmp_path: Path, tc: Runner) -> None:
    from pytest_traincheck.lint.analysis import MAX_FILE_BYTES

    (tmp_path / "huge.py").write_bytes(b"import torch\n" + b"# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    proc = tc("huge.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert "larger than" in only_finding(proc)


# -- paths that are not readable files -------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_trn000(tmp_path: Path, tc: Runner) -> None:
    target = tmp_path / "secret.py"
    target.write_text(DEPRECATED)
    target.chmod(0)
    try:
        proc = tc("secret.py", cwd=tmp_path)
    finally:
        target.chmod(0o644)
    assert proc.returncode == 1
    assert only_finding(proc).startswith("secret.py:1:1: TRN000 cannot read file")


def test_folder_named_like_a_python_file(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "x.py").mkdir()
    (tmp_path / "x.py" / "inner.py").write_text(DEPRECATED)
    proc = tc("x.py", cwd=tmp_path)
    assert only_finding(proc).startswith("x.py/inner.py:2:1: TRN107")
    assert tc(".", cwd=tmp_path).returncode == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "b.py").write_text(DEPRECATED)
    proc = lint(".", cwd=tmp_path, timeout=60)
    assert only_finding(proc).startswith("b.py:2:1: TRN107")


def test_missing_path_is_one_line(tmp_path: Path) -> None:
    proc = lint("does/not/exist.py", cwd=tmp_path)
    assert_one_line_error(proc, "does/not/exist.py")


def test_missing_path_among_good_ones_is_reported_and_the_others_linted(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "a.py").write_text(DEPRECATED)
    proc = tc("a.py", "ghost.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert "ghost.py:1:1: TRN000 no such file or directory" in proc.stdout and "a.py:2:1: TRN107" in proc.stdout


# -- broken configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "key"),
    [('select = "TRN1"', "select"), ("unknown-option = true", "unknown-option"), ('ignore = ["TRN999"]', "TRN999")],
    ids=["wrong-type", "unknown-key", "unknown-code"],
)
def test_invalid_tool_traincheck(tmp_path: Path, table: str, key: str, tc: Runner) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.traincheck]\n{table}\n")
    (tmp_path / "a.py").write_text(DEPRECATED)
    proc = tc("a.py", cwd=tmp_path)
    assert_one_line_error(proc, "pyproject.toml", key)

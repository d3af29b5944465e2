"""--fix writes through symlinks and refuses read-only files; --diff and --fix - keep the file's bytes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

DEPRECATED = "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n"
FIXED = "import torch\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"


def traincheck(*args: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", "--no-cache", *args], cwd=cwd,
                          input=stdin, capture_output=True, env=env, timeout=120)
    assert b"Traceback" not in proc.stderr, proc.stderr
    return proc


def test_fix_on_a_symlink_fixes_the_target_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "train.py"
    target.write_text(DEPRECATED)
    link = tmp_path / "train.py"
    link.symlink_to(target)
    traincheck("--fix", "train.py", cwd=tmp_path)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == FIXED
    assert not [p for p in (tmp_path / "real").iterdir() if p.name != "train.py"]  # no temporary left


def test_fix_refuses_a_read_only_file_with_an_error(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(DEPRECATED)
    (tmp_path / "other.py").write_text(DEPRECATED)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    proc = traincheck("--fix", "train.py", "other.py", cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "train.py" in err[0] and "read-only" in err[0], err
    assert path.read_text() == DEPRECATED and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert (tmp_path / "other.py").read_text() == FIXED  # the others are still fixed


ENCODED = {
    "crlf": DEPRECATED.replace("\n", "\r\n").encode(),
    "latin1": ("# -*- coding: latin-1 -*-\nname = 'café'\n" + DEPRECATED).encode("latin-1"),
    "bom": b"\xef\xbb\xbf" + DEPRECATED.encode(),
}


@pytest.mark.parametrize("kind", sorted(ENCODED))
def test_fix_on_stdin_writes_what_file_fix_writes(tmp_path: Path, kind: str) -> None:
    (tmp_path / "train.py").write_bytes(ENCODED[kind])
    traincheck("--fix", "train.py", cwd=tmp_path)
    expected = (tmp_path / "train.py").read_bytes()
    assert expected != ENCODED[kind]
    proc = traincheck("--fix", "-", cwd=tmp_path, stdin=ENCODED[kind])
    assert proc.stdout == expected


@pytest.mark.parametrize("kind", sorted(ENCODED))
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_diff_applies_and_gives_what_file_fix_writes(tmp_path: Path, kind: str, source: str) -> None:
    patch_tool = shutil.which("patch")
    if patch_tool is None:
        pytest.skip("no patch command")
    (tmp_path / "train.py").write_bytes(ENCODED[kind])
    if source == "file":
        proc = traincheck("--diff", "train.py", cwd=tmp_path)
    else:
        proc = traincheck("--diff", "--stdin-filename", "train.py", "-", cwd=tmp_path, stdin=ENCODED[kind])
    assert proc.stdout.count(b"\n-") == 1 and proc.stdout.count(b"\n+") == 2, proc.stdout  # one line changed
    fixed_copy = tmp_path / "expected.py"
    fixed_copy.write_bytes(ENCODED[kind])
    traincheck("--fix", "expected.py", cwd=tmp_path)
    applied = subprocess.run([patch_tool, "-p1", "--binary"], cwd=tmp_path, input=proc.stdout, capture_output=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (tmp_path / "train.py").read_bytes() == fixed_copy.read_bytes()

"""Configuration errors outside [tool.traincheck] are one line naming the file and the key, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "dependencies_int": (b'[project]\nname = "x"\ndependencies = 5\n', "dependencies"),
    "optional_string": (b'[project]\nname = "x"\noptional-dependencies = "torch"\n', "optional-dependencies"),
    "poetry_tilde": (b'[tool.poetry.dependencies]\ntorch = "~"\n', "torch"),
    "poetry_group_string": (b'[tool.poetry]\ngroup = "dev"\n', "group"),
    "not_utf8": (b'[project]\nname = "caf\xe9"\n', "UTF-8"),
}


def _lint(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "a.py").write_text("x = 1\n")
    return subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", "--no-cache", *args, "a.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_broken_pyproject_outside_the_table_is_one_line(tmp_path: Path, name: str) -> None:
    content, key = CASES[name]
    (tmp_path / "pyproject.toml").write_bytes(content + b'\n[tool.traincheck]\nselect = ["TRN1"]\n')
    proc = _lint(tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pyproject.toml" in lines[0] and key in lines[0], proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_binary_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 4)
    proc = _lint(tmp_path, "--config", "weights.bin")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "weights.bin" in lines[0] and "internal error" not in lines[0], proc.stderr

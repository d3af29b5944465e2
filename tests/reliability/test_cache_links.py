"""The cache never follows symlinks it did not create: no file is written where a planted link points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pytest_traincheck.config import LintConfig
from pytest_traincheck.lint import engine

SOURCE = "import torch\nouter = torch.ger(a, b)\n"


def test_a_dangling_gitignore_link_in_the_cache_is_not_followed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SOURCE)
    cache = tmp_path / ".traincheck_cache"
    cache.mkdir()
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    (cache / ".gitignore").symlink_to(victim)
    engine.lint_paths([tmp_path / "train.py"], LintConfig(root=tmp_path), cache_dir=cache)
    assert not victim.exists()


def test_a_linked_entry_folder_is_not_written_through(tmp_path: Path, monkeypatch) -> None:
    from pytest_traincheck import __version__

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SOURCE)
    cache = tmp_path / ".traincheck_cache"
    cache.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (cache / __version__).symlink_to(elsewhere, target_is_directory=True)
    engine.lint_paths([tmp_path / "train.py"], LintConfig(root=tmp_path), cache_dir=cache)
    assert list(elsewhere.iterdir()) == []


def test_a_default_cache_folder_linked_elsewhere_is_refused_unless_named(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(SOURCE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / ".traincheck_cache").symlink_to(elsewhere, target_is_directory=True)

    def lint(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", *args, "train.py"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr

    lint()
    assert list(elsewhere.iterdir()) == []
    lint("--cache-dir", ".traincheck_cache")  # named by the user: used
    assert list(elsewhere.iterdir()) != []

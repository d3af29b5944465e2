"""Which files ``traincheck lint`` reads: folders walked, default excludes, .gitignore, symlinks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from pytest_traincheck.config import DEFAULT_EXCLUDES
from pytest_traincheck.lint.discovery import PathError, discover, display_path

DEPRECATED = "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n"

from tests.conftest import Runner


@pytest.fixture()
def tc(lint_runner: Runner) -> Runner:
    """Run ``traincheck lint --no-cache ARGS`` in this process."""
    return lint_runner




def _tree(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEPRECATED)


def found(root: Path, paths: Sequence[Path] = (), *, exclude: Sequence[str] = DEFAULT_EXCLUDES,
          gitignore: bool = True) -> list[str]:
    """Return the discovered files as sorted paths relative to ``root``."""
    files = discover(list(paths) or [root], root=root, exclude=exclude, respect_gitignore=gitignore)
    return sorted(Path(os.path.relpath(f, root)).as_posix() for f in files)


def flagged(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """Return the paths of the finding lines of a concise run."""
    return sorted(line.split(":")[0] for line in proc.stdout.splitlines() if ": TRN" in line)


# -- folders and default excludes -------------------------------------------------------------


def test_only_python_files_and_notebooks_are_walked(tmp_path: Path) -> None:
    _tree(tmp_path, "a.py", "pkg/b.py", "notes.txt", "stub.pyi", "nb.ipynb", "script", "pkg/data.json")
    assert found(tmp_path) == ["a.py", "nb.ipynb", "pkg/b.py"]


@pytest.mark.parametrize("folder", [".git", ".venv", "venv", "build", "dist", "__pycache__", "node_modules",
                                    ".tox", "site-packages", ".ipynb_checkpoints", ".traincheck_cache"])
def test_default_excludes(tmp_path: Path, folder: str) -> None:
    _tree(tmp_path, "keep.py", f"{folder}/skip.py", f"src/{folder}/deep.py")
    assert found(tmp_path) == ["keep.py"]


def test_default_excludes_match_folder_names_not_prefixes(tmp_path: Path) -> None:
    _tree(tmp_path, "builder/a.py", "venvtools/b.py", "my_env.py", "build.py")
    assert found(tmp_path) == ["build.py", "builder/a.py", "my_env.py", "venvtools/b.py"]


def test_results_are_sorted_and_unique(tmp_path: Path) -> None:
    _tree(tmp_path, "b.py", "a.py", "sub/c.py")
    files = list(discover([tmp_path, tmp_path / "a.py", tmp_path / "sub"], root=tmp_path, exclude=[]))
    assert sorted(Path(os.path.relpath(f, tmp_path)).as_posix() for f in files) == ["a.py", "b.py", "sub/c.py"]
    assert len(files) == 3


def test_missing_path_raises_path_error(tmp_path: Path) -> None:
    with pytest.raises(PathError, match="nope"):
        list(discover([tmp_path / "nope"], root=tmp_path, exclude=[]))


def test_display_path(tmp_path: Path) -> None:
    assert display_path(tmp_path / "a" / "b.py", cwd=tmp_path) == "a/b.py"
    assert display_path(Path("/elsewhere/x.py"), cwd=tmp_path) == "/elsewhere/x.py"


# -- .gitignore --------------------------------------------------------------------------------------


def test_gitignore_patterns(tmp_path: Path) -> None:
    _tree(tmp_path, "src/model.py", "src/model_gen.py", "src/keep_gen.py", "data/loader.py", "src/data/x.py",
          "top_only.py", "src/top_only.py", "logs/run1/log.py", "a/b/cache/c.py", "data.py")
    (tmp_path / ".gitignore").write_text(
        "# generated code\n"
        "*_gen.py\n"
        "!keep_gen.py\n"
        "data/\n"          # a folder anywhere, not the file data.py
        "/top_only.py\n"   # anchored: only at the top
        "logs/**\n"
        "**/cache\n"
        "\n"
    )
    assert found(tmp_path) == ["data.py", "src/keep_gen.py", "src/model.py", "src/top_only.py"]


def test_dir_only_pattern_does_not_match_files(tmp_path: Path) -> None:
    _tree(tmp_path, "models.py", "models/a.py")
    (tmp_path / ".gitignore").write_text("models/\n")
    assert found(tmp_path) == ["models.py"]


def test_negation_cannot_reinclude_a_file_in_an_ignored_folder(tmp_path: Path) -> None:
    _tree(tmp_path, "out/keep.py", "main.py")
    (tmp_path / ".gitignore").write_text("out/\n!out/keep.py\n")
    assert found(tmp_path) == ["main.py"]  # as in git


def test_negation_of_a_folder_pattern(tmp_path: Path) -> None:
    _tree(tmp_path, "exp/a.py", "exp/keep/b.py", "main.py")
    (tmp_path / ".gitignore").write_text("exp/*\n!exp/keep/\n")
    assert found(tmp_path) == ["exp/keep/b.py", "main.py"]


def test_nested_gitignore_applies_below_its_folder(tmp_path: Path) -> None:
    _tree(tmp_path, "a/scratch.py", "b/scratch.py", "a/real.py")
    (tmp_path / "a" / ".gitignore").write_text("scratch.py\n")
    assert found(tmp_path) == ["a/real.py", "b/scratch.py"]


def test_gitignore_above_the_linted_folder_applies(tmp_path: Path) -> None:
    _tree(tmp_path, "pkg/sub/a_gen.py", "pkg/sub/b.py")
    (tmp_path / ".gitignore").write_text("*_gen.py\n")
    assert found(tmp_path, [tmp_path / "pkg" / "sub"]) == ["pkg/sub/b.py"]


def test_respect_gitignore_off(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "a_gen.py", "b.py")
    (tmp_path / ".gitignore").write_text("*_gen.py\n")
    assert found(tmp_path, gitignore=False) == ["a_gen.py", "b.py"]
    assert flagged(tc(".", cwd=tmp_path)) == ["b.py"]
    (tmp_path / "pyproject.toml").write_text("[tool.traincheck]\nrespect-gitignore = false\n")
    assert flagged(tc(".", cwd=tmp_path)) == ["a_gen.py", "b.py"]


# -- files named explicitly ------------------------------------------------------------------------


def test_explicit_file_is_always_linted(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, ".venv/lib/a.py", "gen/b_gen.py", "legacy/c.py", "notes.txt")
    (tmp_path / ".gitignore").write_text("*_gen.py\n")
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nextend-exclude = ["legacy"]\n')
    assert flagged(tc(".", cwd=tmp_path)) == []
    proc = tc(".venv/lib/a.py", "gen/b_gen.py", "legacy/c.py", "notes.txt", cwd=tmp_path)
    assert flagged(proc) == [".venv/lib/a.py", "gen/b_gen.py", "legacy/c.py", "notes.txt"]


def test_explicit_folder_inside_an_excluded_one_is_walked(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "build/gen/a.py", "build/gen/__pycache__/b.py")
    assert flagged(tc(".", cwd=tmp_path)) == []
    assert flagged(tc("build/gen", cwd=tmp_path)) == ["build/gen/a.py"]  # excludes still apply below it
    assert flagged(tc("build", cwd=tmp_path)) == ["build/gen/a.py"]


# -- symlinks ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_directory_symlink_loop_terminates(tmp_path: Path) -> None:
    _tree(tmp_path, "pkg/a.py", "pkg/sub/b.py")
    (tmp_path / "pkg" / "sub" / "loop").symlink_to(tmp_path / "pkg", target_is_directory=True)
    (tmp_path / "pkg" / "self").symlink_to(".", target_is_directory=True)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", "--no-cache", "pkg"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert flagged(proc) == ["pkg/a.py", "pkg/sub/b.py"]


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_symlinked_file_is_linted_once(tmp_path: Path) -> None:
    _tree(tmp_path, "a.py")
    (tmp_path / "link.py").symlink_to(tmp_path / "a.py")
    assert found(tmp_path) == ["a.py"]


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_walk_skips_dangling_symlinks(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "a.py")
    (tmp_path / ".#train.py").symlink_to(tmp_path / "user@host.1234")  # how Emacs marks a file being edited
    assert found(tmp_path) == ["a.py"]


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_symlinked_file_is_reported_under_the_given_name(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "real/a.py")
    (tmp_path / "link.py").symlink_to(tmp_path / "real" / "a.py")
    assert flagged(tc("link.py", cwd=tmp_path)) == ["link.py"]


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_dangling_symlink_named_explicitly_is_one_finding(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "dangling.py").symlink_to(tmp_path / "missing.py")
    proc = tc("dangling.py", cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (1, 2)
    assert len((proc.stdout + proc.stderr).strip().splitlines()) <= 2

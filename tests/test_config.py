"""``[tool.traincheck]`` / ``traincheck.toml``: discovery, settings, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_traincheck.config import ConfigError, find_config_file, load_config

DEPRECATED = "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n"

from tests.conftest import Runner


@pytest.fixture()
def tc(lint_runner: Runner) -> Runner:
    """Run ``traincheck lint --no-cache ARGS`` in this process."""
    return lint_runner


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytest_traincheck`` in ``cwd`` (for the no-traceback checks)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "pytest_traincheck", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=60)




def flagged(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """Return the paths of the finding lines of a concise run."""
    return sorted(line.split(":")[0] for line in proc.stdout.splitlines() if ": TRN" in line)


def assert_config_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on stderr naming ``words`` and no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("traincheck: error: ")
    for word in words:
        assert word in lines[0], lines[0]


# -- which file is read ------------------------------------------------------------------


def test_nearest_config_wins(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nignore = ["TRN107"]\n')
    (tmp_path / "top.py").write_text(DEPRECATED)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[tool.traincheck]\nselect = ["TRN1"]\n')
    (sub / "inner.py").write_text(DEPRECATED)
    assert tc("top.py", cwd=tmp_path).returncode == 0
    assert flagged(tc("sub/inner.py", cwd=tmp_path)) == ["sub/inner.py"]
    assert flagged(tc("inner.py", cwd=sub)) == ["inner.py"]


def test_pyproject_without_table_is_skipped(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nignore = ["TRN1"]\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.ruff]\nline-length = 99\n')
    (sub / "a.py").write_text(DEPRECATED)
    assert find_config_file(sub) == tmp_path / "pyproject.toml"
    assert tc("a.py", cwd=sub).returncode == 0


def test_traincheck_toml_beats_pyproject_in_the_same_folder(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nselect = ["TRN1"]\n')
    (tmp_path / "traincheck.toml").write_text('ignore = ["TRN107"]\n')
    (tmp_path / "a.py").write_text(DEPRECATED)
    assert find_config_file(tmp_path) == tmp_path / "traincheck.toml"
    assert tc("a.py", cwd=tmp_path).returncode == 0


def test_traincheck_toml_may_use_a_tool_table(tmp_path: Path) -> None:
    (tmp_path / "traincheck.toml").write_text('[tool.traincheck]\nignore = ["TRN107"]\n')
    assert load_config(tmp_path / "traincheck.toml").ignore == ["TRN107"]


def test_config_is_found_from_the_linted_path_not_the_cwd(tmp_path: Path, tc: Runner) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.traincheck]\nignore = ["TRN107"]\n')
    (project / "a.py").write_text(DEPRECATED)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert tc(str(project / "a.py"), cwd=elsewhere).returncode == 0
    assert tc(str(project), cwd=elsewhere).returncode == 0


def test_explicit_config_and_isolated(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nignore = ["TRN107"]\n')
    (tmp_path / "strict.toml").write_text('select = ["TRN"]\n')
    (tmp_path / "a.py").write_text(DEPRECATED)
    assert tc("a.py", cwd=tmp_path).returncode == 0
    assert tc("--isolated", "a.py", cwd=tmp_path).returncode == 1
    assert tc("--config", "strict.toml", "a.py", cwd=tmp_path).returncode == 1


def test_flags_extend_the_file(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nselect = ["TRN2"]\n')
    (tmp_path / "a.py").write_text(DEPRECATED)
    assert tc("a.py", cwd=tmp_path).returncode == 0
    assert tc("--extend-select", "TRN107", "a.py", cwd=tmp_path).returncode == 1
    assert tc("--select", "TRN1", "a.py", cwd=tmp_path).returncode == 1


def test_sanity_subtable_is_not_a_lint_key(tmp_path: Path) -> None:
    table = '[tool.traincheck]\nignore = ["TRN1"]\n\n[tool.traincheck.sanity]\nsteps = 3\n'
    (tmp_path / "pyproject.toml").write_text(table)
    assert load_config(tmp_path / "pyproject.toml").ignore == ["TRN1"]


# -- per-file-ignores and excludes ----------------------------------------------------------


def _tree(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEPRECATED)


def test_per_file_ignores(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "src/train.py", "tests/test_train.py", "tests/unit/test_deep.py", "scripts/old.py",
          "conftest.py")
    (tmp_path / "pyproject.toml").write_text(
        "[tool.traincheck.per-file-ignores]\n"
        '"tests/*" = ["TRN107"]\n'
        '"scripts/" = ["TRN1"]\n'
        '"conftest.py" = "TRN107"\n'
    )
    assert flagged(tc(".", cwd=tmp_path)) == ["src/train.py"]


def test_per_file_ignores_does_not_hide_other_codes(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "a.py")
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck.per-file-ignores]\n"a.py" = ["TRN2"]\n')
    assert flagged(tc(".", cwd=tmp_path)) == ["a.py"]


def test_exclude_and_extend_exclude(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "src/a.py", "legacy/b.py", "src/gen/c.py", "src/d_pb2.py", "build/e.py")
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nextend-exclude = ["legacy", "src/gen", "*_pb2.py"]\n')
    assert flagged(tc(".", cwd=tmp_path)) == ["src/a.py"]  # build/ is a default exclude
    assert flagged(tc("--extend-exclude", "legacy,src", ".", cwd=tmp_path)) == []


def test_extend_exclude_flag_adds_to_the_file(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "src/a.py", "legacy/b.py")
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nextend-exclude = ["legacy"]\n')
    assert flagged(tc("--extend-exclude", "src", ".", cwd=tmp_path)) == []


def test_extend_select_flag_adds_to_the_file(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "a.py")
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nselect = ["TRN2"]\nextend-select = ["TRN107"]\n')
    assert flagged(tc(".", cwd=tmp_path)) == ["a.py"]
    assert flagged(tc("--extend-select", "TRN0", ".", cwd=tmp_path)) == ["a.py"]


def test_exclude_replaces_the_defaults(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "src/a.py", "build/e.py", "legacy/b.py")
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nexclude = ["legacy"]\n')
    assert flagged(tc(".", cwd=tmp_path)) == ["build/e.py", "src/a.py"]
    assert flagged(tc("--exclude", "src,build", ".", cwd=tmp_path)) == ["legacy/b.py"]


def test_exclude_patterns_are_relative_to_the_config_folder(tmp_path: Path, tc: Runner) -> None:
    _tree(tmp_path, "pkg/gen/a.py", "pkg/b.py")
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nextend-exclude = ["pkg/gen"]\n')
    assert flagged(tc(".", cwd=tmp_path / "pkg")) == ["b.py"]


# -- broken configuration: one line, exit 2 ------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('selectt = ["TRN1"]', ["pyproject.toml", "selectt"]),
        ('select = "TRN1"', ["pyproject.toml", "select", "list"]),
        ('ignore = [107]', ["pyproject.toml", "ignore", "107"]),
        ('ignore = ["TRN999"]', ["pyproject.toml", "ignore", "TRN999"]),
        ('extend-select = ["E501"]', ["pyproject.toml", "extend-select", "E501"]),
        ('respect-gitignore = "yes"', ["pyproject.toml", "respect-gitignore", "bool"]),
        ('torch-version = 2.1', ["pyproject.toml", "torch-version", "str"]),
        ('exclude = [1, 2]', ["pyproject.toml", "exclude"]),
        ('per-file-ignores = ["a.py"]', ["pyproject.toml", "per-file-ignores", "dict"]),
        ('per-file-ignores = { "a.py" = ["TRN999"] }', ["pyproject.toml", "per-file-ignores", "TRN999"]),
        ('select = ["TRN1"', ["pyproject.toml", "invalid TOML"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_config_is_one_line(tmp_path: Path, tc: Runner, table: str, words: list[str]) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.traincheck]\n{table}\n")
    (tmp_path / "a.py").write_text(DEPRECATED)
    assert_config_error(tc("a.py", cwd=tmp_path), *words)


def test_tool_traincheck_not_a_table(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool]\ntraincheck = "on"\n')
    (tmp_path / "a.py").write_text(DEPRECATED)
    assert_config_error(tc("a.py", cwd=tmp_path), "pyproject.toml", "[tool.traincheck]")


def test_bad_traincheck_toml_names_its_file(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "traincheck.toml").write_text('unknown-key = 1\n')
    (tmp_path / "a.py").write_text(DEPRECATED)
    assert_config_error(tc("a.py", cwd=tmp_path), "traincheck.toml", "unknown-key")


def test_missing_explicit_config(tmp_path: Path, tc: Runner) -> None:
    (tmp_path / "a.py").write_text(DEPRECATED)
    assert_config_error(tc("--config", "nope.toml", "a.py", cwd=tmp_path), "nope.toml")


def test_bad_config_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.traincheck]\nignore = "TRN107"\nbogus = 1\n')
    (tmp_path / "a.py").write_text(DEPRECATED)
    proc = run("lint", "--no-cache", "a.py", cwd=tmp_path)
    assert_config_error(proc, str(tmp_path / "pyproject.toml"))


def test_config_error_message_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[tool.traincheck\] select: expected list"):
        from pytest_traincheck.config import _convert  # the message format users see

        _convert(Path("pyproject.toml"), "select", "TRN1")

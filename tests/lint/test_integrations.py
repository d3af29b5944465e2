"""The flake8 plugin and the pre-commit hooks."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pytest_traincheck.lint.flake8_plugin import TraincheckChecker

ROOT = Path(__file__).resolve().parents[2]
DEPRECATED = "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n"
MESSAGE = "TRN107 `clip_grad_norm` is deprecated: call `torch.nn.utils.clip_grad_norm_` (in place, same arguments)."
ENTRY_POINT = "pytest_traincheck.lint.flake8_plugin:TraincheckChecker"


def check(source: str, filename: str = "train.py") -> list[tuple[int, int, str]]:
    """Run the flake8 plugin class the way flake8 does and return (line, col, message)."""
    checker = TraincheckChecker(ast.parse(source), source.splitlines(True), filename)
    return [(line, col, message) for line, col, message, _ in checker.run()]


def _registered() -> bool:
    return any(ep.name == "TRN" and ep.value == ENTRY_POINT
               for ep in metadata.entry_points(group="flake8.extension"))


# -- the flake8 plugin, called directly --------------------------------------------------------------


def test_plugin_reports_zero_based_columns_and_code_first(tmp_path: Path) -> None:
    assert check(DEPRECATED, str(tmp_path / "train.py")) == [(2, 0, MESSAGE)]


def test_plugin_yields_flake8_tuples(tmp_path: Path) -> None:
    checker = TraincheckChecker(ast.parse(DEPRECATED), DEPRECATED.splitlines(True), str(tmp_path / "a.py"))
    (item,) = list(checker.run())
    assert len(item) == 4 and item[3] is TraincheckChecker
    assert TraincheckChecker.name == "pytest-traincheck" and TraincheckChecker.version


def test_plugin_clean_file(tmp_path: Path) -> None:
    assert check("import torch\nx = torch.zeros(3)\n", str(tmp_path / "a.py")) == []
    assert check("", str(tmp_path / "a.py")) == []


def test_plugin_honours_noqa_and_the_project_config(tmp_path: Path) -> None:
    assert check(DEPRECATED.rstrip("\n") + "  # noqa\n", str(tmp_path / "a.py")) == []
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.traincheck]\nignore = ["TRN107"]\n')
    assert check(DEPRECATED, str(project / "a.py")) == []
    (project / "pyproject.toml").write_text("[tool.traincheck]\nselect = [1]\n")  # broken: defaults apply
    from pytest_traincheck.lint.flake8_plugin import _settings_for

    _settings_for.cache_clear()
    assert check(DEPRECATED, str(project / "b.py")) == [(2, 0, MESSAGE)]


def test_plugin_stdin_and_latin1(tmp_path: Path) -> None:
    assert check(DEPRECATED, "stdin") == [(2, 0, MESSAGE)]
    latin = "# -*- coding: latin-1 -*-\nimport torch\ns = 'café'\ntorch.nn.utils.clip_grad_norm(p, 1)\n"
    assert [(line, col) for line, col, _ in check(latin, str(tmp_path / "l.py"))] == [(4, 0)]


# -- flake8 itself, in a subprocess ------------------------------------------------------------------


def _flake8(*args: str, cwd: Path, extra_path: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "flake8", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=60)


def test_flake8_entry_point_is_registered() -> None:
    if not _registered():
        pytest.skip("the flake8.extension entry point `TRN = pytest_traincheck.lint.flake8_plugin:TraincheckChecker` is "
                    "not in the installed metadata (add it to pyproject.toml and reinstall)")
    assert _registered()


def test_flake8_select_trn(tmp_path: Path) -> None:
    pytest.importorskip("flake8")
    shim = ""
    if not _registered():
        # Until the package declares the entry point, register it through a throw-away dist-info.
        site = tmp_path / "site"
        info = site / "traincheck_flake8_shim-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: traincheck-flake8-shim\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[flake8.extension]\nTRN = {ENTRY_POINT}\n")
        shim = str(site)
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text(DEPRECATED + "import os\n")
    (work / "clean.py").write_text("import torch\n")
    proc = _flake8("--select", "TRN", ".", cwd=work, extra_path=shim)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [f"./train.py:2:1: {MESSAGE}"]
    assert "Traceback" not in proc.stderr
    both = _flake8("--select", "TRN,F401", "train.py", cwd=work, extra_path=shim)
    assert [line.split()[1] for line in both.stdout.splitlines()] == ["TRN107", "F401"]
    ignored = _flake8("--select", "TRN", "--extend-ignore", "TRN107", "train.py", cwd=work, extra_path=shim)
    assert (ignored.returncode, ignored.stdout) == (0, "")


# -- pre-commit hooks ----------------------------------------------------------------------------------


def _hooks() -> list[dict]:  # type: ignore[type-arg]
    yaml = pytest.importorskip("yaml")
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert isinstance(hooks, list)
    return hooks


def test_pre_commit_manifest_keys() -> None:
    hooks = {hook["id"]: hook for hook in _hooks()}
    assert set(hooks) == {"traincheck", "traincheck-fix"}
    for hook in hooks.values():
        assert {"id", "name", "entry", "language"} <= set(hook)  # what pre-commit requires
        assert hook["language"] == "python"
        assert hook["types_or"] == ["python", "jupyter"] and "types" not in hook  # notebooks too
        assert hook["require_serial"] is False
        assert isinstance(hook.get("args", []), list)
        assert hook["entry"].split()[:2] == ["traincheck", "lint"]
    assert "--fix" not in hooks["traincheck"]["entry"].split() + hooks["traincheck"].get("args", [])
    assert "--fix" in hooks["traincheck-fix"]["entry"].split() + hooks["traincheck-fix"].get("args", [])


def test_pre_commit_manifest_validates_with_pre_commit() -> None:
    clientlib = pytest.importorskip("pre_commit.clientlib", reason="pre-commit is not installed")
    clientlib.load_manifest(str(ROOT / ".pre-commit-hooks.yaml"))  # raises InvalidManifestError


@pytest.mark.parametrize("hook_id", ["traincheck", "traincheck-fix"])
def test_pre_commit_hook_runs_like_pre_commit_runs_it(tmp_path: Path, hook_id: str) -> None:
    """Run the hook's entry + args + file names, as pre-commit does, and check its verdict."""
    hook = next(h for h in _hooks() if h["id"] == hook_id)
    words = hook["entry"].split() + list(hook.get("args", []))
    assert words[0] == "traincheck"
    command = [sys.executable, "-m", "pytest_traincheck", *words[1:]]  # the console script's module
    (tmp_path / "bad.py").write_text(DEPRECATED)
    (tmp_path / "good.py").write_text("import torch\n")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([*command, "bad.py", "good.py"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=60)
    assert "Traceback" not in proc.stderr
    if hook_id == "traincheck":
        assert proc.returncode == 1  # pre-commit fails the hook
        assert "bad.py:2:1: TRN107" in proc.stdout
        assert (tmp_path / "bad.py").read_text() == DEPRECATED
    else:
        assert proc.returncode == 0  # pre-commit still fails it: the file changed
        assert (tmp_path / "bad.py").read_text() == DEPRECATED.replace("clip_grad_norm(", "clip_grad_norm_(")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRAINCHECK_TRY_REPO") != "1",
                    reason="installs the package into a pre-commit environment (needs pre-commit, git and the "
                    "package index); set TRAINCHECK_TRY_REPO=1 to run")
def test_pre_commit_try_repo(tmp_path: Path) -> None:  # pragma: no cover - opt-in
    pytest.importorskip("pre_commit")
    if not shutil.which("git"):
        pytest.skip("needs git")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", "bench"))
    subprocess.run(["git", "init", "-q"], cwd=src, check=True)
    subprocess.run(["git", "add", "-A"], cwd=src, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=src, check=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text(DEPRECATED)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "a.py"], cwd=repo, check=True)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "home")}
    lint = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(src), "traincheck", "--files", "a.py"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert lint.returncode == 1 and "TRN107" in lint.stdout, lint.stdout + lint.stderr
    fix = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(src), "traincheck-fix", "--files",
                          "a.py"], cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert "files were modified by this hook" in fix.stdout, fix.stdout + fix.stderr
    assert (repo / "a.py").read_text() == DEPRECATED.replace("clip_grad_norm(", "clip_grad_norm_(")

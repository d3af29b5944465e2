"""The ``traincheck`` command line, run as a subprocess like users run it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_traincheck import __version__

DEPRECATED = "import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n"
FIXED = "import torch\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
CLEAN = "import torch\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
# Imported by name: TRN107 fires but offers no fix (renaming the call alone would break the import).
UNFIXABLE = "from torch.nn.utils import clip_grad_norm\nclip_grad_norm(model.parameters(), 5)\n"


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytest_traincheck`` in ``cwd``."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "pytest_traincheck", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=env, timeout=60)


def lint(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``traincheck lint`` without the cache."""
    return run("lint", "--no-cache", *args, cwd=cwd, stdin=stdin)


from tests.conftest import Runner


@pytest.fixture()
def tc(traincheck: Runner) -> Runner:
    """Run ``traincheck ARGS`` in this process."""
    return traincheck




def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr naming ``words``, no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(DEPRECATED)
    (tmp_path / "clean.py").write_text(CLEAN)
    return tmp_path


# -- exit codes and output switches ----------------------------------------------------


def test_findings_exit_1(project: Path) -> None:
    proc = lint("train.py", cwd=project)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "train.py:2:1: TRN107 [*] `clip_grad_norm` is deprecated: call `torch.nn.utils.clip_grad_norm_` "
        "(in place, same arguments).",
        "Found 1 problem (1 fixable with --fix).",
    ]
    assert proc.stderr == ""


def test_clean_exit_0(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", "clean.py", cwd=project)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "All checks passed!\n", "")


def test_default_path_is_the_current_folder(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", cwd=project)
    assert proc.returncode == 1
    assert "train.py:2:1: TRN107" in proc.stdout


def test_exit_zero(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", "--exit-zero", "train.py", cwd=project)
    assert proc.returncode == 0
    assert "TRN107" in proc.stdout


def test_quiet_prints_findings_only(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", "--quiet", "train.py", cwd=project)
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 1 and proc.stdout.startswith("train.py:2:1: TRN107")
    assert tc("lint", "--no-cache", "-q", "clean.py", cwd=project).stdout == ""


def test_statistics(project: Path, tc: Runner) -> None:
    (project / "more.py").write_text(DEPRECATED + UNFIXABLE.replace("from", "\nfrom", 1))
    proc = tc("lint", "--no-cache", "--statistics", ".", cwd=project)
    assert proc.returncode == 1
    first = proc.stdout.splitlines()[0].split()
    assert first == ["3", "TRN107", "[*]", "deprecated-clip-grad-norm"]
    assert proc.stdout.splitlines()[-1] == "Found 3 problems (2 fixable with --fix)."


def test_usage_error_is_one_line(project: Path) -> None:
    assert_one_line_error(lint("--no-such-flag", cwd=project), "--no-such-flag")
    assert_one_line_error(lint("--output-format", "yaml", "train.py", cwd=project), "yaml")
    assert_one_line_error(lint("--jobs", "0", "train.py", cwd=project), "--jobs")


def test_missing_path_is_one_line(project: Path) -> None:
    assert_one_line_error(lint("nope.py", cwd=project), "nope.py")
    beside = lint("train.py", "missing/dir", cwd=project)  # the others are still linted
    assert beside.returncode == 1 and "missing/dir:1:1: TRN000 no such file or directory" in beside.stdout


def test_no_command_prints_help_and_exits_2(project: Path, tc: Runner) -> None:
    proc = tc(cwd=project)
    assert proc.returncode == 2
    assert "lint" in proc.stdout and "explain" in proc.stdout


def test_version() -> None:
    proc = run("--version", cwd=Path.cwd())
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"traincheck {__version__}"


# -- selection: codes and prefixes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "reported"),
    [
        ([], True),
        (["--select", "TRN107"], True),
        (["--select", "TRN1"], True),
        (["--select", "TRN"], True),
        (["--select", "ALL"], True),
        (["--select", "trn10"], True),  # case-insensitive
        (["--select", "TRN2"], False),
        (["--select", "TRN2,TRN10"], True),  # comma-separated
        (["--ignore", "TRN107"], False),
        (["--ignore", "TRN1"], False),
        (["--select", "TRN107", "--ignore", "TRN1"], True),  # the more specific selector wins
        (["--select", "TRN1", "--ignore", "TRN107"], False),
        (["--select", "TRN1", "--ignore", "TRN1"], False),  # a tie: ignore wins
        (["--select", "TRN2", "--extend-select", "TRN107"], True),
        (["--ignore", "TRN1", "--extend-select", "TRN107"], True),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_selection(project: Path, flags: list[str], reported: bool, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", *flags, "train.py", cwd=project)
    assert proc.returncode == (1 if reported else 0), proc.stdout + proc.stderr
    assert ("TRN107" in proc.stdout) is reported


@pytest.mark.parametrize("flag", ["--select", "--ignore", "--extend-select"])
def test_unknown_code_is_one_line(project: Path, flag: str, tc: Runner) -> None:
    assert_one_line_error(tc("lint", "--no-cache", flag, "TRN999", "train.py", cwd=project), "TRN999")
    assert_one_line_error(tc("lint", "--no-cache", flag, "E501", "train.py", cwd=project), "E501")


# -- fixes ---------------------------------------------------------------------------------


def test_fix_writes_the_file_and_is_idempotent(project: Path) -> None:
    target = project / "train.py"
    target.chmod(0o640)
    proc = lint("--fix", "train.py", cwd=project)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout == "All checks passed! Fixed 1 problem.\n"
    assert target.read_text() == FIXED
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the mode survives the atomic replace
    assert sorted(p.name for p in project.iterdir()) == ["clean.py", "train.py"]  # no temporary file left
    again = lint("--fix", "train.py", cwd=project)
    assert (again.returncode, again.stdout) == (0, "All checks passed!\n")
    assert target.read_text() == FIXED


def test_fix_reports_what_is_left(project: Path, tc: Runner) -> None:
    (project / "mixed.py").write_text(DEPRECATED + UNFIXABLE)
    proc = tc("lint", "--no-cache", "--fix", "mixed.py", cwd=project)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "mixed.py:4:1: TRN107 `clip_grad_norm` is deprecated: call `torch.nn.utils.clip_grad_norm_` "
        "(in place, same arguments).",
        "Fixed 1, found 1 problem.",
    ]
    assert (project / "mixed.py").read_text() == FIXED + UNFIXABLE


def test_fix_leaves_clean_files_untouched(project: Path, tc: Runner) -> None:
    clean = project / "clean.py"
    before = clean.stat().st_mtime_ns
    tc("lint", "--no-cache", "--fix", ".", cwd=project)
    assert clean.stat().st_mtime_ns == before


def test_diff_prints_and_changes_nothing(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", "--diff", "train.py", cwd=project)
    assert proc.returncode == 1
    assert (project / "train.py").read_text() == DEPRECATED
    assert proc.stdout.splitlines() == [
        "--- a/train.py",
        "+++ b/train.py",
        "@@ -1,2 +1,2 @@",
        " import torch",
        "-torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)",
        "+torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
    ]
    clean = tc("lint", "--no-cache", "--diff", "clean.py", cwd=project)
    assert (clean.returncode, clean.stdout) == (0, "")


def test_diff_exits_1_on_findings_without_a_fix(project: Path, tc: Runner) -> None:
    (project / "unfixable.py").write_text(UNFIXABLE)
    proc = tc("lint", "--no-cache", "--diff", "unfixable.py", cwd=project)
    assert proc.returncode == 1
    assert proc.stdout == ""  # stdout stays a diff (empty here), fit for `patch`
    assert proc.stderr.strip() == "1 problem has no fix to show: run `traincheck lint` without --diff to see it."


# -- standard input -------------------------------------------------------------------------


def test_stdin_with_filename(project: Path) -> None:
    proc = lint("--stdin-filename", "src/model/train.py", "-", cwd=project, stdin=DEPRECATED)
    assert proc.returncode == 1
    assert proc.stdout.startswith("src/model/train.py:2:1: TRN107")


def test_stdin_without_filename(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", "-", cwd=project, stdin=DEPRECATED)
    assert proc.returncode == 1
    assert proc.stdout.startswith("-:2:1: TRN107")


def test_stdin_fix_writes_the_code_to_stdout(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", "--fix", "--stdin-filename", "train.py", "-", cwd=project, stdin=DEPRECATED)
    assert (proc.returncode, proc.stdout) == (0, FIXED)
    clean = tc("lint", "--no-cache", "--fix", "-", cwd=project, stdin=CLEAN)
    assert clean.stdout == CLEAN


def test_stdin_diff(project: Path, tc: Runner) -> None:
    proc = tc("lint", "--no-cache", "--diff", "--stdin-filename", "t.py", "-", cwd=project, stdin=DEPRECATED)
    assert proc.returncode == 1
    assert "+torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)" in proc.stdout


def test_stdin_json(project: Path, tc: Runner) -> None:
    import json

    proc = tc("lint", "--no-cache", "--output-format", "json", "--stdin-filename", "a/b.py", "-",
              cwd=project, stdin=DEPRECATED)
    assert [(d["path"], d["line"], d["code"]) for d in json.loads(proc.stdout)] == [("a/b.py", 2, "TRN107")]


# -- parallel runs and the cache -------------------------------------------------------------


def test_parallel_and_serial_runs_agree(tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / f"m{i}.py").write_text(DEPRECATED if i % 2 else CLEAN)
    serial = lint("--jobs", "1", ".", cwd=tmp_path)
    parallel = lint("--jobs", "3", ".", cwd=tmp_path)
    assert serial.returncode == parallel.returncode == 1
    assert serial.stdout == parallel.stdout
    assert [line.split(":")[0] for line in serial.stdout.splitlines()[:-1]] == ["m1.py", "m3.py", "m5.py"]


def test_cached_run_gives_the_same_output(project: Path, tc: Runner) -> None:
    cache = project / "cachedir"
    first = tc("lint", "--cache-dir", str(cache), ".", cwd=project)
    assert cache.is_dir()
    second = tc("lint", "--cache-dir", str(cache), ".", cwd=project)
    assert first.stdout == second.stdout and first.returncode == second.returncode == 1
    (project / "train.py").write_text(CLEAN)  # a changed file is linted again
    assert tc("lint", "--cache-dir", str(cache), ".", cwd=project).returncode == 0


# -- rules and explain ---------------------------------------------------------------------


def test_rules_lists_trn107(tmp_path: Path, tc: Runner) -> None:
    proc = tc("rules", cwd=tmp_path)
    assert proc.returncode == 0
    header = proc.stdout.splitlines()[0].split()
    assert header[:5] == ["code", "name", "lint", "fix", "sanity"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("TRN107"))
    assert row.split()[:4] == ["TRN107", "deprecated-clip-grad-norm", "on", "safe"]


def test_rules_markdown(tmp_path: Path, tc: Runner) -> None:
    proc = tc("rules", "--format", "markdown", cwd=tmp_path)
    assert proc.returncode == 0
    assert "| TRN107 | `deprecated-clip-grad-norm` |" in proc.stdout


@pytest.mark.parametrize("name", ["TRN107", "trn107", "deprecated-clip-grad-norm"])
def test_explain(tmp_path: Path, name: str, tc: Runner) -> None:
    proc = tc("explain", name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# TRN107 deprecated-clip-grad-norm\n")
    assert "## Why is this bad?" in proc.stdout
    assert "clip_grad_norm_(model.parameters(), max_norm=1)" in proc.stdout


def test_explain_sections_are_not_indented(tmp_path: Path, tc: Runner) -> None:
    proc = tc("explain", "TRN107", cwd=tmp_path)
    assert "\n## What it does\n" in proc.stdout


def test_explain_catalogue_only_code(tmp_path: Path, tc: Runner) -> None:
    proc = tc("explain", "TRN000", cwd=tmp_path)
    assert proc.returncode == 0
    assert "The file could not be parsed." in proc.stdout


CHECK_SECTIONS = ("## What it measures", "## Why it matters", "## Thresholds", "## Known problems", "## Example")


def test_explain_a_check_prints_its_full_documentation(tmp_path: Path, tc: Runner) -> None:
    proc = tc("explain", "TRN601", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("# TRN601 cannot-overfit-single-batch\n")
    for section in CHECK_SECTIONS:
        assert f"\n{section}\n" in proc.stdout, section


def test_explain_prints_both_halves_of_a_code_with_a_rule_and_a_check(tmp_path: Path, tc: Runner) -> None:
    out = tc("explain", "TRN101", cwd=tmp_path).stdout
    static, dynamic = out.index("# `traincheck lint` (static rule)"), out.index("# `pytest --train-sanity` (dynamic check)")
    assert static < out.index("## What it does") < dynamic < out.index("## What it measures")


# Run in a fresh interpreter in which `import torch` fails, as on a lint-only install.
WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, NoTorch())
from pytest_traincheck.cli import main
code = main(sys.argv[1:])
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["rules"], ["rules", "--format", "markdown"], ["explain", "TRN601"],
                                  ["explain", "TRN101"], ["explain", "missing-zero-grad"]])
def test_rules_and_explain_work_without_torch(tmp_path: Path, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    assert "TRN601" in proc.stdout or "TRN101" in proc.stdout
    if args[0] == "rules":  # the dynamic half is still listed
        assert any(line.startswith(("TRN601", "| TRN601")) for line in proc.stdout.splitlines())


def test_explain_unknown_is_one_line(tmp_path: Path, tc: Runner) -> None:
    assert_one_line_error(run("explain", "TRN999", cwd=tmp_path), "TRN999")
    for name in ("no-such-rule", "E501"):
        assert_one_line_error(tc("explain", name, cwd=tmp_path), name)


def test_lint_never_imports_torch(tmp_path: Path) -> None:
    """A CI lint job installs only libcst: linting torch code must not need torch."""
    (tmp_path / "train.py").write_text(
        "import torch\nimport torch.nn as nn\nmodel = nn.Linear(2, 2)\n"
        "for x, y in loader:\n    loss = nn.CrossEntropyLoss()(model(x), y)\n    loss.backward()\n"
        "    optimizer.step()\n")
    code = ("import sys\nfrom pytest_traincheck.cli import main\n"
            f"rc = main(['lint', {str(tmp_path)!r}, '--no-cache', '--jobs', '1'])\n"
            "assert 'torch' not in sys.modules, 'lint imported torch'\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "TRN101" in proc.stdout

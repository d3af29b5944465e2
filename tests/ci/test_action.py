"""The GitHub Action (action.yml): valid metadata, safe scripts, and its lint steps run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


@pytest.fixture(scope="module")
def action() -> dict:
    """Return action.yml, parsed."""
    return yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))


def _steps(action: dict) -> list[dict]:
    return action["runs"]["steps"]


def _step(action: dict, step_id: str) -> dict:
    return next(s for s in _steps(action) if s.get("id") == step_id)


def test_action_matches_the_metadata_schema(action: dict) -> None:
    schema = json.loads((DATA / "github-action-schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(action, schema)
    assert action["runs"]["using"] == "composite"


def test_schema_rejects_broken_metadata(action: dict) -> None:
    """The schema subset is strict enough to catch the usual action.yml mistakes."""
    schema = json.loads((DATA / "github-action-schema.json").read_text(encoding="utf-8"))
    broken_step = json.loads(json.dumps(action))
    del broken_step["runs"]["steps"][1]["shell"]  # a composite `run` step without `shell`
    unpinned = json.loads(json.dumps(action))
    unpinned["runs"]["steps"][0]["uses"] = "actions/setup-python"
    no_description = json.loads(json.dumps(action))
    del no_description["inputs"]["paths"]["description"]
    for bad in (broken_step, unpinned, no_description, {"name": "x", "runs": {"using": "composite", "steps": []}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def _expressions(node: object) -> list[str]:
    if isinstance(node, dict):
        return [e for value in node.values() for e in _expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in _expressions(value)]
    if isinstance(node, str):
        return [m.strip() for m in EXPR.findall(node)]
    return []


def test_every_expression_names_a_declared_input_or_step(action: dict) -> None:
    inputs = set(action["inputs"])
    ids = {s["id"] for s in _steps(action) if "id" in s}
    exprs = _expressions(action["runs"]) + _expressions(action["outputs"])
    exprs += [s["if"] for s in _steps(action) if "if" in s]
    used_inputs = {name for e in exprs for name in re.findall(r"inputs\.([A-Za-z0-9_-]+)", e)}
    used_steps = {name for e in exprs for name in re.findall(r"steps\.([A-Za-z0-9_-]+)\.", e)}
    assert used_inputs <= inputs, used_inputs - inputs
    assert used_steps <= ids, used_steps - ids
    assert inputs - used_inputs == set(), "declared but unused inputs"
    # the outputs read step outputs that the steps really write
    for name, output in action["outputs"].items():
        step_id, key = re.search(r"steps\.([\w-]+)\.outputs\.([\w-]+)", output["value"]).groups()
        assert f"{key}=" in _step(action, step_id)["run"], name


def test_scripts_take_inputs_from_env_only(action: dict) -> None:
    """No `${{ }}` inside a script: an input spliced into bash could inject commands."""
    for step in _steps(action):
        if "run" in step:
            assert step["shell"] == "bash"
            assert "${{" not in step["run"], step["name"]


def test_action_lints_annotates_and_uploads_sarif(action: dict) -> None:
    names = [s.get("uses", "").split("@")[0] for s in _steps(action)]
    assert "github/codeql-action/upload-sarif" in names
    assert "mikepenz/action-junit-report" in names
    lint = _step(action, "lint")["run"]
    assert "--output-format github" in lint
    assert "--output-format sarif" in _step(action, "sarif")["run"]
    assert "--train-sanity" in _step(action, "pytest")["run"]
    assert "--junitxml" in _step(action, "pytest")["run"]
    assert action["inputs"]["train-sanity"]["default"] == "false"


def _run_step(action: dict, step_id: str, cwd: Path, outputs: Path, **inputs: str) -> subprocess.CompletedProcess[str]:
    """Run one `run:` step the way the runner does: its env with inputs resolved, `bash -e`."""
    values = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    values.update({k.replace("_", "-"): v for k, v in inputs.items()})
    step = _step(action, step_id)
    env = dict(os.environ, GITHUB_OUTPUT=str(outputs))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    for key, value in step.get("env", {}).items():
        env[key] = EXPR.sub(lambda m: values[m.group(1).strip().split(".", 1)[1]], value)
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_lint_and_sarif_steps_run_on_a_project(action: dict, tmp_path: Path) -> None:
    if shutil.which("traincheck", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the traincheck script is not installed beside this Python")
    (tmp_path / "pyproject.toml").write_text("[tool.traincheck]\n")
    (tmp_path / "train.py").write_text("import torch\ntorch.nn.utils.clip_grad_norm(model.parameters(), 1.0)\n")
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    lint = _run_step(action, "lint", tmp_path, outputs)
    assert lint.returncode == 0, lint.stderr  # the step itself passes; the last step fails the job
    assert "::error file=train.py,line=2,col=1" in lint.stdout
    assert "exit-code=1" in outputs.read_text()
    sarif = _run_step(action, "sarif", tmp_path, outputs)
    assert sarif.returncode == 0, sarif.stderr
    log = json.loads((tmp_path / "traincheck.sarif").read_text())
    jsonschema.validate(log, json.loads((DATA / "sarif-schema-2.1.0.json").read_text()))
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["TRN107"]
    assert "file=traincheck.sarif" in outputs.read_text()
    # a clean project: exit code 0, no annotation
    (tmp_path / "train.py").write_text("import torch\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n")
    outputs.write_text("")
    clean = _run_step(action, "lint", tmp_path, outputs)
    assert clean.returncode == 0 and "::error" not in clean.stdout
    assert "exit-code=0" in outputs.read_text()


def test_a_hostile_input_is_not_executed(action: dict, tmp_path: Path) -> None:
    if shutil.which("traincheck", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the traincheck script is not installed beside this Python")
    (tmp_path / "a.py").write_text("x = 1\n")
    outputs = tmp_path / "out"
    outputs.write_text("")
    marker = tmp_path / "pwned"
    result = _run_step(action, "lint", tmp_path, outputs, paths=f"a.py; touch {marker}")
    assert not marker.exists()
    assert "exit-code=2" in outputs.read_text()  # `a.py;` and `touch` are missing paths
    assert "::error title=traincheck::" in result.stdout


def test_pre_commit_rev_matches_the_version() -> None:
    """The documented `rev:` is the tag of the packaged version, and the hook ids exist."""
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    ids = {hook["id"] for hook in hooks}
    assert ids == {"traincheck", "traincheck-fix"}
    for doc in ("README.md", "docs/integrations.md", ".pre-commit-hooks.yaml"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        lines = text.splitlines()
        revs = [m.group(1) for i, line in enumerate(lines) if (m := re.search(r"rev: (\S+)", line))
                and "id: traincheck" in "\n".join(lines[i + 1:i + 4])]
        assert revs, doc
        assert set(revs) == {f"v{version}"}, (doc, revs)


def test_readme_workflow_uses_this_action() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(# \.github/workflows/traincheck\.yml.*?)```", readme, re.DOTALL)
    assert block, "the README's copy-paste workflow"
    workflow = yaml.safe_load(block.group(1))
    steps = workflow["jobs"]["traincheck"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("traincheck/pytest-traincheck@v") for u in uses)
    assert workflow["jobs"]["traincheck"]["permissions"]["security-events"] == "write"
    mine = next(s for s in steps if s.get("uses", "").startswith("traincheck/pytest-traincheck@"))
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert set(mine.get("with", {})) <= set(action["inputs"])

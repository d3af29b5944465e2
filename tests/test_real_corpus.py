"""bench/real_corpus.py on a two-file snapshot made here: matching, figures, report and a missing snapshot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "real_corpus.py"

# a loop that never clears gradients (TRN101 on the `for` line) and a forward that is clean
TRAIN = """\
import torch
from torch import nn

model = nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]:
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""
CLEAN = """\
import torch
from torch import nn

model = nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]:
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity and return its output."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture()
def snapshot(tmp_path: Path) -> tuple[Path, str]:
    """A mirror folder holding one repository snapshot with a buggy and a clean training file."""
    repo = tmp_path / "mirror" / "someone+loops" / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "train.py").write_text(TRAIN)
    (repo / "clean.py").write_text(CLEAN)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "snapshot")
    return tmp_path / "mirror", git(repo, "rev-parse", "HEAD")


def run(tmp_path: Path, mirror: Path, files: list[dict]) -> subprocess.CompletedProcess[str]:
    """Write a labels file and run the script on it."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"line_tolerance": 2, "not_labelled_codes": ["TRN402"], "files": files}))
    return subprocess.run([sys.executable, str(SCRIPT), "--labels", str(labels), "--mirror", str(mirror),
                           "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report.md")],
                          capture_output=True, text=True, timeout=300)


def test_bug_found_and_style_missed(tmp_path: Path, snapshot: tuple[Path, str]) -> None:
    """The real TRN101 is found (recall 1.00), the unmatched style label is listed, the clean file adds nothing."""
    mirror, commit = snapshot
    files = [
        {"repo": "someone/loops", "commit": commit, "path": "src/train.py", "clean_families": [],
         "labels": [{"code": "TRN101", "line": 6, "severity": "bug", "note": "no zero_grad", "lines": [6, 9]},
                    {"code": "TRN303", "line": 7, "severity": "style", "note": "made up for the test"}]},
        {"repo": "someone/loops", "commit": commit, "path": "clean.py", "clean_families": [], "labels": []},
    ]
    done = run(tmp_path, mirror, files)
    assert done.returncode == 0, done.stderr
    assert "corpus: 2 files" in done.stdout and "1 repositories" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("| TRN1xx"))
    assert row.split("|")[2:5] == [" 1 ", " 1 ", " 1.00 "]
    report = (tmp_path / "report.md").read_text()
    assert "TRN303: 1" in report  # the style label nothing matched
    assert (tmp_path / "out" / f"someone+loops@{commit[:12]}" / "src" / "train.py").read_text() == TRAIN


def test_unlabelled_finding_is_a_false_positive(tmp_path: Path, snapshot: tuple[Path, str]) -> None:
    """A finding with no label lowers precision and is listed with its place."""
    mirror, commit = snapshot
    files = [{"repo": "someone/loops", "commit": commit, "path": "src/train.py", "clean_families": [],
              "labels": []}]
    done = run(tmp_path, mirror, files)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| TRN1xx"))
    assert row.split("|")[7:10] == [" 1 ", " 0 ", " 0.00 "]
    assert "src/train.py:6`" in (tmp_path / "report.md").read_text()


def test_missing_snapshot_is_one_line(tmp_path: Path, snapshot: tuple[Path, str]) -> None:
    """A repository with no snapshot stops the run with exit 2 and one line naming what to fetch."""
    mirror, commit = snapshot
    files = [{"repo": "nobody/absent", "commit": commit, "path": "a.py", "clean_families": [], "labels": []}]
    done = run(tmp_path, mirror, files)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "fetch github:nobody/absent" in done.stderr

"""The engine's own guarantees: rule isolation, the parse-skipping triggers, the read-only walker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import libcst as cst
import pytest

from pytest_traincheck.lint import analysis
from pytest_traincheck.lint import engine
from pytest_traincheck.lint import manifest
from pytest_traincheck.lint.rule import Invalid, Rule
from pytest_traincheck.lint.registry import all_rules
from pytest_traincheck.lint.walk import walk

CLIP = b"import torch\ntorch.nn.utils.clip_grad_norm(p, 1)\n"


class Exploding(Rule):
    """A rule that raises on every call (test double)."""

    CODE = "TRN208"

    def visit_Call(self, node: cst.Call) -> None:
        raise ValueError("boom")


def test_a_rule_that_raises_is_an_internal_error_and_the_others_still_report(monkeypatch: pytest.MonkeyPatch) -> None:
    real = [rule for rule in all_rules() if rule.CODE == "TRN107"]
    monkeypatch.setattr(engine.Settings, "rules", lambda self: [*real, Exploding])
    result = engine.lint_bytes("x.py", CLIP, engine.Settings(("TRN107", "TRN208")))
    assert result.internal_error
    assert [f.code for f in result.findings] == ["TRN001", "TRN107"]
    assert "TRN208 (Exploding) raised ValueError: boom" in result.findings[0].message


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.CODE)
def test_triggers_never_hide_a_rule_s_own_findings(rule: type[Rule]) -> None:
    """Skipping files without trigger words is safe: every invalid example holds a trigger."""
    for example in rule.INVALID:
        text = example.source() if isinstance(example, Invalid) else example
        assert not rule.TRIGGERS or any(t in text for t in rule.TRIGGERS), (rule.CODE, text[:80])


def test_files_without_trigger_words_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real_parse = analysis.parse
    monkeypatch.setattr(analysis, "parse", lambda path, data, tree=None: parsed.append(path) or real_parse(path, data, tree))
    settings = engine.Settings(tuple(rule.CODE for rule in all_rules()))
    engine.lint_bytes("plain.py", b"def add(a, b):\n    return a + b\n", settings)
    engine.lint_bytes("model.py", CLIP, settings)
    assert parsed == ["model.py"]


class _Recorder(cst.BatchableCSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def visit_Call(self, node: cst.Call) -> None:
        self.events.append(f"call {cst.Module([]).code_for_node(node.func)}")

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.events.append(f"def {node.name.value}")

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.events.append(f"end {original_node.name.value}")

    def visit_Name(self, node: cst.Name) -> None:
        self.events.append(f"name {node.value}")


SOURCE = '''
import torch

@torch.no_grad()
def evaluate(model, loader, *, k=1):
    for x, y in loader:
        out = model(x) if k else None
        print(out.argmax(1), y)

class Net(torch.nn.Module):
    def forward(self, x):
        return [f(x) for f in self.layers]
'''


def test_the_walker_visits_like_libcst() -> None:
    module = cst.parse_module(SOURCE)
    ours, theirs = _Recorder(), _Recorder()
    walk(module, [ours])
    cst.MetadataWrapper(module, unsafe_skip_copy=True).visit_batched([theirs])
    assert ours.events == theirs.events


def test_other_frameworks_code_is_not_linted() -> None:
    mxnet_loop = (b"from mxnet import autograd\nfor x, y in loader:\n    with autograd.record():\n"
                  b"        l = loss(net(x), y)\n    l.backward()\n    trainer.step(16)\n")
    settings = engine.Settings(tuple(rule.CODE for rule in all_rules()))
    assert engine.lint_bytes("mxnet_train.py", mxnet_loop, settings).findings == []
    torch_loop = (b"import torch\nfor x, y in loader:\n    l = loss(net(x), y)\n    l.backward()\n"
                  b"    optimizer.step()\n")
    assert "TRN101" in [f.code for f in engine.lint_bytes("torch_train.py", torch_loop, settings).findings]


def test_a_parameter_shadows_an_imported_module() -> None:
    source = (b"from torch.utils import data\nimport torch.nn as nn\n\n"
              b"def prepare(data):\n    return data.train_dataloader()\n\n"
              b"def build():\n    return nn.Layer(3, 4)\n")
    findings = engine.lint_bytes("s.py", source, engine.Settings(("TRN208",))).findings
    assert [(f.line, f.code) for f in findings] == [(8, "TRN208")]


def test_rule_manifest_matches_the_registry() -> None:
    """The manifest the warm path reads instead of importing the rules is up to date."""
    assert manifest.rule_defaults() == manifest.build(), (
        "src/pytest_traincheck/lint/data/rules.json is stale: run `python scripts/regenerate.py`"
    )


def test_warm_run_never_imports_libcst_or_the_rules(tmp_path: Path) -> None:
    """A re-lint answered wholly from the cache loads neither the parser nor any rule module."""
    (tmp_path / "train.py").write_text("import torch\nfor x in data:\n    loss = model(x)\n    loss.backward()\n"
                                       "    optimizer.step()\n")
    (tmp_path / "util.py").write_text("def add(a, b):\n    return a + b\n")
    probe = (
        "import sys\n"
        "import concurrent.futures as futures\n"
        "pools = []\n"
        "class Pool(futures.ProcessPoolExecutor):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        pools.append(1)\n"
        "        super().__init__(*args, **kwargs)\n"
        "futures.ProcessPoolExecutor = Pool\n"
        "from pytest_traincheck.cli import main\n"
        "code = main(['lint', '.', '--isolated', '-q', '--jobs', '1'])\n"
        "loaded = sorted(m for m in sys.modules if m == 'libcst' or m.startswith('pytest_traincheck.rules.')"
        " and m.rsplit('.', 1)[1] not in ('engine', 'cache', 'manifest', 'project', 'discovery'))\n"
        "print(code, len(pools), ','.join(loaded))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
            for _ in range(2)]
    cold, warm = (run.stdout.split("\n")[-2].split(" ") for run in runs)
    assert cold[0] == warm[0] == "1"  # the missing zero_grad is reported both times
    assert cold[1] == "1" and cold[2:] == [""]  # the cold run parsed, in a worker process (even at -j1)
    assert warm[1:] == ["0", ""], warm  # the warm one started no worker and loaded no parser


_NUMPY_VIEW = """\
import numpy as np
from numpy.ma import MaskedArray

def transposed(a):
    return a.transpose(1, 0).view(MaskedArray)

def evaluate(model, batches):
    for x in batches:
        model(x)
"""


def test_files_that_never_touch_torch_are_not_linted_with_torch_rules() -> None:
    settings = engine.Settings(tuple(rule.CODE for rule in all_rules()))
    assert engine.lint_bytes("masked.py", _NUMPY_VIEW.encode(), settings).findings == []
    with_torch = ("import torch\n" + _NUMPY_VIEW).encode()
    assert "TRN303" in [f.code for f in engine.lint_bytes("masked.py", with_torch, settings).findings]


def test_a_file_importing_torch_code_of_its_own_project_is_linted(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("import torch\nclass Net(torch.nn.Module):\n    pass\n")
    train = tmp_path / "train.py"
    train.write_text("from model import Net\n\ndef flat(x):\n    return x.permute(0, 2, 1).view(x.size(0), -1)\n")
    settings = engine.Settings(tuple(rule.CODE for rule in all_rules()))
    assert [f.code for f in engine.lint_bytes(str(train), train.read_bytes(), settings).findings] == ["TRN403"]
    (tmp_path / "model.py").write_text("import numpy\n")
    assert engine.lint_bytes(str(train), train.read_bytes(), settings).findings == []

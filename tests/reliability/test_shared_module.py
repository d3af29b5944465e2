"""A module the model factory reuses between calls (a global backbone) is left as it was, and each check starts from it."""

from __future__ import annotations

import json
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pytest_traincheck import Verdict, run_checks  # noqa: E402
from pytest_traincheck.harness import examples as ex  # noqa: E402

pytest_plugins = ["pytester"]

CODES = ["TRN601", "TRN503", "TRN101"]


def _backbone() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(ex.FEATURES, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1))
    return net.eval()  # a pretrained backbone the user keeps in eval mode


def _state(module: nn.Module) -> dict[str, Any]:
    return {"tensors": {k: v.clone() for k, v in module.state_dict().items()},
            "modes": [m.training for m in module.modules()],
            "requires_grad": [p.requires_grad for p in module.parameters()],
            "grads": [p.grad for p in module.parameters()]}


def test_a_global_backbone_is_unchanged_after_the_checks_and_each_check_starts_from_it() -> None:
    backbone = _backbone()
    before = _state(backbone)
    starts: list[torch.Tensor] = []

    def model() -> nn.Module:
        starts.append(backbone[0].weight.detach().clone())  # what each fresh model begins with
        return nn.Sequential(backbone, nn.Linear(16, ex.CLASSES))

    report = run_checks(ex.setup(model=model), select=CODES)
    assert {r.code: r.verdict for r in report.results}["TRN601"] is Verdict.PASS  # it did train the backbone
    after = _state(backbone)
    assert after["modes"] == before["modes"] and not any(after["modes"])
    assert after["requires_grad"] == before["requires_grad"] and after["grads"] == [None] * len(after["grads"])
    for key, value in before["tensors"].items():  # weights and BatchNorm running statistics
        assert torch.equal(after["tensors"][key], value), key
    assert all(torch.equal(start, starts[0]) for start in starts)


BACKBONE_SETUP = '''
import torch
from torch import nn
from pytest_traincheck.harness import examples as ex

torch.manual_seed(3)
BACKBONE = nn.Sequential(nn.Linear(ex.FEATURES, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU()).eval()

def model():
    return nn.Sequential(BACKBONE, nn.Linear(16, ex.CLASSES))

def make():
    return [ex.setup("backbone", model=model)]
'''

COMPARE = '''
import json, torch
import backbonesetup

BEFORE = {}

def _state():
    b = backbonesetup.BACKBONE
    return {"sums": {k: float(v.double().sum()) for k, v in b.state_dict().items()},
            "modes": [m.training for m in b.modules()], "grads": [p.grad is None for p in b.parameters()]}

def pytest_sessionstart(session):
    BEFORE.update(_state())

def pytest_unconfigure(config):
    with open("backbone.json", "w") as handle:
        json.dump({"before": BEFORE, "after": _state()}, handle)
'''


def test_pytest_train_sanity_leaves_a_global_backbone_as_it_found_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(backbonesetup=BACKBONE_SETUP)
    pytester.makeconftest(COMPARE)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["backbonesetup:make"]\n')
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider",
                                "--train-sanity-select", ",".join(CODES))
    result.assert_outcomes(passed=len(CODES))
    state = json.loads((pytester.path / "backbone.json").read_text())
    assert state["after"] == state["before"]

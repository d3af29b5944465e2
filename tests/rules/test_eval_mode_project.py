"""TRN302 across files: evaluation helpers given the model, and models whose class is defined elsewhere."""

from __future__ import annotations

from pytest_traincheck.lint.project import ClassFacts, Condition, FileFacts, ProjectFacts
from pytest_traincheck.lint.testing import lint_source

HELPER = """
import torch


def test_seg(model, loader):
    scores = []
    for points, target in loader:
        pred = model(points)
        scores.append((pred.argmax(1) == target).float().mean())
    return scores
"""
DROPOUT_MODEL = """
import torch.nn as nn


class SegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 13)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.fc(self.drop(x))
"""
PLAIN_MODEL = DROPOUT_MODEL.replace("nn.Dropout(0.5)", "nn.ReLU()")
TRAIN = """
import torch
from model import SegNet
from utils import test_seg

model = SegNet()
for epoch in range(10):
    for points, target in train_loader:
        model = model.train()
        criterion(model(points), target).backward()
        optimizer.step()
    {before}print(test_seg(model, test_loader))
"""


def _lines(files: dict[str, str], main: str = HELPER, path: str = "utils.py") -> list[int]:
    findings, _ = lint_source(main, ["TRN302"], path=path, files=files)
    return [f.line for f in findings]


def test_helper_given_a_dropout_model_by_every_caller() -> None:
    assert _lines({"model.py": DROPOUT_MODEL, "train.py": TRAIN.format(before="")}) == [7]


def test_helper_quiet_when_a_caller_switches_to_eval_first() -> None:
    assert _lines({"model.py": DROPOUT_MODEL, "train.py": TRAIN.format(before="model.eval()\n    ")}) == []


def test_helper_quiet_for_a_model_without_dropout_or_batchnorm() -> None:
    assert _lines({"model.py": PLAIN_MODEL, "train.py": TRAIN.format(before="")}) == []


def test_helper_with_a_model_of_unknown_class_needs_the_caller_to_toggle_train() -> None:
    assert _lines({"train.py": TRAIN.format(before="")}) == [7]  # SegNet not in the run, but model.train()
    untoggled = TRAIN.format(before="").replace("        model = model.train()\n", "")
    assert _lines({"train.py": untoggled}) == []


def test_helper_that_nobody_calls_or_that_calls_eval_itself() -> None:
    assert _lines({"model.py": DROPOUT_MODEL}) == []
    evaluating = HELPER.replace("    scores = []\n", "    model.eval()\n    scores = []\n")
    assert _lines({"model.py": DROPOUT_MODEL, "train.py": TRAIN.format(before="")}, main=evaluating) == []


def test_helper_called_through_a_function_whose_caller_switched_to_eval() -> None:
    relay = """
import torch
from model import SegNet
from utils import test_seg


def report(net, loader):
    return test_seg(net, loader)


model = SegNet()
model.train()
{before}report(model, test_loader)
"""
    assert _lines({"model.py": DROPOUT_MODEL, "relay.py": relay.format(before="")}) == [7]
    assert _lines({"model.py": DROPOUT_MODEL, "relay.py": relay.format(before="model.eval()\n")}) == []


INLINE = """
import torch
from {module} import Net

net = Net()
for step, (x, y) in enumerate(train_loader):
    criterion(net(x), y).backward()
    optimizer.step()
    if step % 10 == 0:
        x, y = next(iter(val_loader))
        print((net(x).argmax(1) == y).float().mean())
"""


def test_inline_test_batch_follows_the_imported_class() -> None:
    assert _lines({"nets.py": DROPOUT_MODEL.replace("SegNet", "Net")}, INLINE.format(module="nets"), "t.py") == [10]
    assert _lines({"nets.py": PLAIN_MODEL.replace("SegNet", "Net")}, INLINE.format(module="nets"), "t.py") == []
    assert _lines({}, INLINE.format(module="nets"), "t.py") == [10]  # unknown class, trained in this loop


def test_inline_test_batch_quiet_when_switched_around_it() -> None:
    switched = INLINE.format(module="nets").replace("        x, y = next", "        net.eval()\n        x, y = next")
    assert _lines({}, switched, "t.py") == []


def test_class_facts_mode_dependence() -> None:
    built_elsewhere = DROPOUT_MODEL.replace("nn.Dropout(0.5)", "make_layers(cfg)")
    facts = {}
    for name, source in (("a.py", DROPOUT_MODEL), ("b.py", PLAIN_MODEL), ("c.py", built_elsewhere)):
        from pytest_traincheck.lint import engine
        result = engine.lint_bytes(name, source.lstrip().encode(), engine.Settings(("TRN302",)))
        facts[name] = result.facts.classes["SegNet"]
    assert (facts["a.py"].modal, facts["a.py"].opaque) == (True, False)
    assert (facts["b.py"].modal, facts["b.py"].opaque) == (False, False)
    assert (facts["c.py"].modal, facts["c.py"].opaque) == (False, True)


def test_project_settles_modal_through_held_and_base_classes() -> None:
    files = [
        ("m.py", FileFacts(classes={
            "Block": ClassFacts("Block", ["torch.nn.Module"], modal=True, direct_module=True),
            "Wrapper": ClassFacts("Wrapper", ["torch.nn.Module"], holds=["Block"], direct_module=True),
            "Child": ClassFacts("Child", ["Wrapper"]),
            "Plain": ClassFacts("Plain", ["torch.nn.Module"], direct_module=True),
            "Hidden": ClassFacts("Hidden", ["torch.nn.Module"], opaque=True, direct_module=True),
        })),
    ]
    project = ProjectFacts(files)
    assert project.holds(Condition("modal", "Child"), "m.py")
    assert not project.holds(Condition("modal", "Plain"), "m.py")
    assert not project.holds(Condition("maybe-modal", "Plain"), "m.py")
    assert project.holds(Condition("maybe-modal", "Hidden"), "m.py")  # built by something unknown
    assert project.holds(Condition("maybe-modal", "Unknown"), "m.py")  # not in the run
    assert not project.holds(Condition("modal", "Unknown"), "m.py")

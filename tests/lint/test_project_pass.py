"""The project pass: facts from one file settle findings in another, also through the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_traincheck.cli import main

MODEL_SOFTMAX = """
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=1)
"""
MODEL_LOGITS = MODEL_SOFTMAX.replace("return F.softmax(self.fc(x), dim=1)", "return self.fc(x)")
TRAIN = """
import torch.nn as nn
from model import Net

model = Net()
criterion = nn.CrossEntropyLoss()


def step(x, y):
    return criterion(model(x), y)
"""


def _lint(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    code = main(["lint", str(tmp_path), "--select", "TRN201", "--output-format", "concise", "-q",
                 "--cache-dir", str(tmp_path / ".cache"), *extra])
    out = capsys.readouterr().out
    assert code in (0, 1)
    return [line.split(": ")[0].rsplit("/", 1)[-1] + " " + line.split(": ")[1].split()[0] for line in out.splitlines()]


def test_cross_file_finding_follows_the_model_file_through_the_cache(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.py").write_text(MODEL_SOFTMAX)
    (tmp_path / "train.py").write_text(TRAIN)
    assert _lint(tmp_path, capsys) == ["train.py:10:12 TRN201"]
    assert _lint(tmp_path, capsys) == ["train.py:10:12 TRN201"]  # warm cache, same answer
    (tmp_path / "model.py").write_text(MODEL_LOGITS)  # only model.py changes: train.py comes from the cache
    assert _lint(tmp_path, capsys) == []
    (tmp_path / "model.py").write_text(MODEL_SOFTMAX)
    assert _lint(tmp_path, capsys) == ["train.py:10:12 TRN201"]


def test_a_class_defined_in_the_same_file_wins_over_a_namesake(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    local = MODEL_SOFTMAX + TRAIN.replace("from model import Net\n", "")
    (tmp_path / "a.py").write_text(local)
    (tmp_path / "b.py").write_text(MODEL_LOGITS)  # another class Net, returning logits
    assert [f.split()[1] for f in _lint(tmp_path, capsys, "--no-cache")] == ["TRN201"]


def test_the_imported_module_decides_between_namesakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.py").write_text(MODEL_LOGITS)
    (tmp_path / "other.py").write_text(MODEL_SOFTMAX)  # a namesake in a module train.py does not import
    (tmp_path / "train.py").write_text(TRAIN)
    assert _lint(tmp_path, capsys, "--no-cache") == []


def test_a_sibling_module_wins_over_a_namesake_module_in_another_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # pytorch/examples-shaped: every example folder has its own model.py with its own Net.
    for folder, model in (("super_resolution", MODEL_LOGITS), ("classifier", MODEL_SOFTMAX)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.py").write_text(model)
        (tmp_path / folder / "train.py").write_text(TRAIN)
    assert _lint(tmp_path, capsys, "--no-cache") == ["train.py:10:12 TRN201"]
    found = _lint(tmp_path / "classifier", capsys, "--no-cache")
    assert found == ["train.py:10:12 TRN201"]


def test_relative_imports_resolve_within_the_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder, model in (("pkg_a", MODEL_SOFTMAX), ("pkg_b", MODEL_LOGITS)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
        (tmp_path / folder / "model.py").write_text(model)
        (tmp_path / folder / "train.py").write_text(TRAIN.replace("from model import", "from .model import"))
    lines = _lint(tmp_path, capsys, "--no-cache")
    assert lines == ["train.py:10:12 TRN201"]


def test_a_bare_name_defined_in_two_files_is_not_guessed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.py").write_text(MODEL_SOFTMAX)
    (tmp_path / "b.py").write_text(MODEL_LOGITS)
    (tmp_path / "train.py").write_text(TRAIN.replace("from model import Net\n", "from helpers import *\n"))
    assert _lint(tmp_path, capsys, "--no-cache") == []


CHAR_RNN = """
import torch.nn as nn


class RNN(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.gru = nn.GRU(size, size)
"""
CHAR_MLP = CHAR_RNN.replace("self.gru = nn.GRU(size, size)", "self.fc = nn.Linear(size, size)")
TRAIN_STAR = """
import torch
from helpers import *
from model import *

decoder = RNN(50)
optimizer = torch.optim.Adam(decoder.parameters())


def train(x, y):
    decoder.zero_grad()
    criterion(decoder(x), y).backward()
    optimizer.step()


for x, y in batches:
    train(x, y)
"""


def test_a_star_import_decides_between_namesakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # practical-pytorch-shaped: two example folders, each a model.py with its own class RNN, one recurrent.
    for folder, model in (("generation", CHAR_RNN), ("classification", CHAR_MLP)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.py").write_text(model)
        (tmp_path / folder / "train.py").write_text(TRAIN_STAR)
    lines = _lint(tmp_path, capsys, "--no-cache", "--select", "TRN105")
    assert len(lines) == 1 and lines[0].endswith("TRN105")
    assert _lint(tmp_path / "classification", capsys, "--no-cache", "--select", "TRN105") == []
    # Through the cache too: the star import is part of the file's cached facts.
    assert len(_lint(tmp_path / "generation", capsys, "--select", "TRN105")) == 1
    assert len(_lint(tmp_path / "generation", capsys, "--select", "TRN105")) == 1


def test_a_star_import_outside_the_run_leaves_a_namesake_unguessed(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.py").write_text(CHAR_RNN)
    (tmp_path / "b.py").write_text(CHAR_MLP)
    (tmp_path / "train.py").write_text(TRAIN_STAR)  # model.py is not in the run
    assert _lint(tmp_path, capsys, "--no-cache", "--select", "TRN105") == []


SELF_TRAINING_MODEL = """
from torch import nn


class TextCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(300, 4)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        return self.softmax(self.fc(x))

    def add_loss_op(self, loss_op):
        self.loss_op = loss_op

    def run_epoch(self, batches):
        for x, y in batches:
            y_pred = self.__call__(x)
            self.loss_op(y_pred, y).backward()
"""
TRAIN_HANDING_LOSS = """
from torch import nn
from model import TextCNN

model = TextCNN()
model.add_loss_op(nn.NLLLoss())
model.run_epoch(batches)
"""


def test_a_loss_handed_to_a_self_training_model_is_settled_through_the_cache(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.py").write_text(SELF_TRAINING_MODEL)
    (tmp_path / "train.py").write_text(TRAIN_HANDING_LOSS)
    assert _lint(tmp_path, capsys, "--select", "TRN205") == ["train.py:6:1 TRN205"]
    assert _lint(tmp_path, capsys, "--select", "TRN205") == ["train.py:6:1 TRN205"]  # warm: the facts are cached
    log_softmax = SELF_TRAINING_MODEL.replace("nn.Softmax(dim=1)", "nn.LogSoftmax(dim=1)")
    (tmp_path / "model.py").write_text(log_softmax)
    assert _lint(tmp_path, capsys, "--select", "TRN205") == []
    elsewhere = SELF_TRAINING_MODEL.replace("self.loss_op(y_pred, y)", "self.loss_op(y, y)")
    (tmp_path / "model.py").write_text(elsewhere)  # the stored loss no longer sees the model's output
    assert _lint(tmp_path, capsys, "--select", "TRN205") == []


SAVE_HELPER = """
import torch


def save_model(model, path):
    torch.save(model.state_dict(), path)
"""
SAVE_HELPER_GUARDED = SAVE_HELPER.replace("    torch.save", "    if torch.distributed.get_rank() == 0:\n        torch.save")
DISTRIBUTED_MAIN = """
import torch.distributed as dist
from model import save_model


def main(args):
    dist.init_process_group("nccl")
    save_model(model, "last.pt")
"""
LOADER = """
from torch.utils.data import DataLoader


class AudioDataLoader(DataLoader):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
"""
LOADER_SHUFFLING = LOADER.replace("(*args, **kwargs)\n", "(*args, shuffle=True, **kwargs)\n")
LOADER_MAIN = """
import torch
from data_loader import AudioDataLoader

train_loader = AudioDataLoader(train_dataset, batch_size=32)
"""


@pytest.mark.parametrize(("helper", "guarded", "main_file", "code", "expected"), [
    (SAVE_HELPER, SAVE_HELPER_GUARDED, DISTRIBUTED_MAIN, "TRN712", "main.py:8:5 TRN712"),
    (LOADER, LOADER_SHUFFLING, LOADER_MAIN, "TRN401", "main.py:5:16 TRN401"),
], ids=["save-helper", "loader-subclass"])
def test_what_a_function_or_class_of_another_file_does_is_settled_through_the_cache(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], helper: str, guarded: str, main_file: str, code: str,
        expected: str) -> None:
    name = "model.py" if code == "TRN712" else "data_loader.py"
    (tmp_path / name).write_text(helper)
    (tmp_path / "main.py").write_text(main_file)
    assert _lint(tmp_path, capsys, "--select", code) == [expected]
    (tmp_path / name).write_text(guarded)  # only the other file changes: main.py comes from the cache
    assert _lint(tmp_path, capsys, "--select", code) == []
    (tmp_path / name).write_text(helper)
    assert _lint(tmp_path, capsys, "--select", code) == [expected]

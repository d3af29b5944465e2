"""The data checks (TRN401/402/406/407/408): edge cases, the reference setup and the data_* mistake files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from pytest_traincheck import run_checks
from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check

DATA_CODES = ["TRN401", "TRN402", "TRN406", "TRN407", "TRN408"]
QUIET = (Verdict.PASS, Verdict.SKIP)
MISTAKES = Path(__file__).resolve().parents[2] / "examples" / "mistakes"
# Each data mistake file and the one code it must trigger (TRN404 is a lint rule only).
DATA_MISTAKES = {
    "data_no_shuffle": "TRN401",
    "data_no_normalization": "TRN402",
    "data_train_test_overlap": "TRN406",
    "data_imbalanced_labels": "TRN407",
    "data_augmentation_on_test": "TRN404",
}


def _verdict(code: str, training: Any) -> Any:
    return run_check(code, prepare(training))


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"traincheck_data_mistake_{name}", MISTAKES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference(**overrides: Any) -> Any:
    pytest.importorskip("torchvision")
    from pytest_traincheck.fixtures.reference import make_training

    training = make_training()
    for name, value in overrides.items():
        setattr(training, name, value)
    return training


class _Stream(IterableDataset):
    def __iter__(self) -> Any:
        x, y = ex.blobs(48)
        return iter(zip(x, y))


# -- the reference setup stays quiet --------------------------------------------------------------
def test_reference_mnist_is_quiet() -> None:
    report = run_checks(_reference(), select=DATA_CODES)
    assert [r.verdict for r in report.results] == [Verdict.PASS] * len(DATA_CODES), report.describe_problems()


def test_reference_without_normalize_warns() -> None:
    from torchvision import transforms

    training = _reference()
    training.data.dataset.transform = transforms.ToTensor()
    result = _verdict("TRN402", training)
    assert result.verdict is Verdict.WARN and "ToTensor" in result.message, result.describe()


def test_reference_evaluated_on_its_training_loader_fails() -> None:
    training = _reference()
    training.eval_data = training.data
    result = _verdict("TRN406", training)
    assert result.verdict is Verdict.FAIL and result.evidence["same_object"], result.describe()


# -- skips where a verdict cannot be had ----------------------------------------------------------
@pytest.mark.parametrize("code", ["TRN401", "TRN406", "TRN407"])
def test_one_shot_iterator_is_skipped_not_consumed(code: str) -> None:
    batches = [ex.blobs(seed=s) for s in range(3)]
    training = ex.setup(data=iter(batches), eval_data=iter(batches))
    data = prepare(training)
    assert run_check(code, data).verdict is Verdict.SKIP


def test_list_and_iterable_dataset_are_not_judged_for_order() -> None:
    assert _verdict("TRN401", ex.setup()).verdict is Verdict.SKIP
    stream = ex.setup(data=DataLoader(_Stream(), batch_size=8))
    result = _verdict("TRN401", stream)
    assert result.verdict is Verdict.SKIP and "IterableDataset" in result.message


def test_augmented_but_unshuffled_is_caught_by_labels() -> None:
    class Jitter(TensorDataset):
        def __getitem__(self, i: int) -> Any:
            x, y = super().__getitem__(i)
            return x + 0.01 * torch.randn_like(x), y

    x, y = ex.blobs(64)
    result = _verdict("TRN401", ex.setup(data=DataLoader(Jitter(x, y), batch_size=8)))
    assert result.verdict is Verdict.FAIL and "labels" in result.message, result.describe()


def test_token_inputs_are_skipped() -> None:
    tokens = torch.randint(0, 50, (16, 6))
    model = lambda: nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(24, ex.CLASSES))
    result = _verdict("TRN402", ex.setup(model=model, data=[(tokens, ex.blobs()[1])]))
    assert result.verdict is Verdict.SKIP


def test_regression_has_no_labels_to_check() -> None:
    x, _ = ex.blobs()
    training = ex.setup(model=lambda: ex.MLP(out=1), loss_fn=nn.MSELoss(), data=[(x, x[:, :1])])
    assert _verdict("TRN407", training).verdict is Verdict.SKIP
    assert _verdict("TRN408", training).verdict is Verdict.SKIP


# -- estimates and labels -------------------------------------------------------------------------
def test_overlap_is_scaled_for_the_unread_training_data() -> None:
    x, y = ex.blobs(6000)
    train = DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True)
    # 100 evaluation samples, all in the training set: about a third of them are in the 2048 read.
    training = ex.setup(data=train, eval_data=[(x[:100], y[:100])])
    result = _verdict("TRN406", training)
    assert result.verdict is Verdict.FAIL, result.describe()
    assert result.evidence["duplicates"] < 60 and result.evidence["estimated_share"] > 0.8


def test_max_samples_option_bounds_the_draw() -> None:
    x, y = ex.blobs(600)
    training = ex.setup(data=DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True),
                        options={"TRN407": {"max_samples": 100}})
    assert _verdict("TRN407", training).evidence["samples"] == 100


def test_class_weights_are_inverse_frequency_with_mean_one() -> None:
    weights = _data.class_weights({0: 90, 1: 10})
    assert weights[1] / weights[0] == pytest.approx(9.0)
    assert sum(weights.values()) / 2 == pytest.approx(1.0)


def test_custom_ignore_index_is_allowed() -> None:
    x, y = ex.blobs(48)
    y[::4] = 255
    training = ex.setup(data=DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True),
                        loss_fn=nn.CrossEntropyLoss(ignore_index=255))
    assert _verdict("TRN408", training).verdict is Verdict.PASS


def test_soft_labels_and_a_casting_step_pass() -> None:
    x, y = ex.blobs(48)
    soft = torch.nn.functional.one_hot(y, ex.CLASSES).float() * 0.9 + 0.1 / ex.CLASSES  # label smoothing
    assert _verdict("TRN408", ex.setup(data=[(x, soft)])).verdict is Verdict.PASS

    def casting(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        inputs, targets = batch
        return ex.good_step(model, (inputs, targets.long()), optimizer, loss_fn)

    floats = DataLoader(TensorDataset(x, y.float()), batch_size=16, shuffle=True)
    assert _verdict("TRN408", ex.setup(data=floats, step=casting)).verdict is Verdict.PASS


def test_a_step_that_crashes_for_another_reason_is_an_error() -> None:
    def broken(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        raise ValueError("not a label problem")

    result = _verdict("TRN408", ex.setup(step=broken))
    assert result.verdict is Verdict.ERROR and "ValueError" in result.message


def test_sample_hashes_see_dtype_and_values() -> None:
    a = torch.zeros(2, 3)
    assert _data.sample_hashes(a)[0] == _data.sample_hashes(a)[1]
    assert _data.sample_hashes(a)[0] != _data.sample_hashes(a.double())[0]
    assert _data.sample_hashes(torch.tensor([[0.0, 1.0]]))[0] != _data.sample_hashes(torch.tensor([[1.0, 0.0]]))[0]


# -- the data_* mistake files ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DATA_MISTAKES))
def test_data_mistake_triggers_exactly_its_check(name: str) -> None:
    pytest.importorskip("torchvision")
    module = _load(name)
    code = DATA_MISTAKES[name]
    text = (MISTAKES / f"{name}.py").read_text(encoding="utf-8")
    assert text.split('"""')[1].split()[0] == code
    report = run_checks(module.make_training())
    flagged = {r.code for r in report.results if r.verdict not in QUIET}
    assert flagged == ({code} if code in DATA_CODES else set()), report.describe_problems()


@pytest.mark.parametrize("name", sorted(DATA_MISTAKES))
def test_data_mistake_lints_as_expected(name: str) -> None:
    from pytest_traincheck.lint import engine
    from pytest_traincheck.lint.registry import all_rules

    codes = tuple(r.CODE for r in all_rules() if r.DEFAULT_ON or r.CODE == "TRN402")
    path = MISTAKES / f"{name}.py"
    found = {f.code for f in engine.settle([engine.lint_bytes(path.name, path.read_bytes(), engine.Settings(codes))])}
    static = {"TRN401", "TRN402", "TRN404"}  # the data mistakes a linter can see in the source
    assert found == ({DATA_MISTAKES[name]} & static)

"""Any batch: dicts, dict subclasses, namedtuples, dataclasses, nested and longer tuples run every check."""

from __future__ import annotations

import collections
from collections import UserDict
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check, run_checks
from pytest_traincheck.harness.spec import SetupError, Training

Pair = collections.namedtuple("Pair", ["image", "target", "index"])


@dataclass
class Sample:
    """A dataclass batch with a non-tensor field."""

    pixel_values: torch.Tensor
    labels: torch.Tensor
    source: str = "synthetic"


class Encoding(UserDict):
    """Shaped like a tokenizer's BatchEncoding: a UserDict with an extra attribute."""

    def __init__(self, data: Any = None) -> None:
        super().__init__(data or {})
        self.encodings = None


class _Rows(Dataset):
    """Per-sample records built by ``make(x, y, i)``; the DataLoader collates them."""

    def __init__(self, make: Callable[..., Any], x: torch.Tensor, y: torch.Tensor) -> None:
        self.make, self.x, self.y = make, x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        return self.make(self.x[i], self.y[i], i)


def _loader(make: Callable[..., Any], collate: Any = None, n: int = 64, seed: int = 0) -> DataLoader:
    x, y = ex.blobs(n)
    if seed:  # other samples of the same classes
        x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 0.1
    return DataLoader(_Rows(make, x, y), batch_size=16, shuffle=True, collate_fn=collate)


def _step(get: Callable[[Any], tuple[Any, Any]]) -> Callable[..., Any]:
    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        x, y = get(batch)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return step


def _encodings(items: list[Any]) -> Encoding:
    return Encoding({"input_ids": torch.stack([i["input_ids"] for i in items]),
                     "attention_mask": torch.ones(len(items), 4, dtype=torch.long),
                     "labels": torch.stack([i["labels"] for i in items])})


class TokenModel(nn.Module):
    """Embed token ids, average them, classify."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 16)
        self.head = nn.Linear(16, ex.CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        return self.head(self.embed(input_ids).mean(1))


def _tokens(x: torch.Tensor, y: torch.Tensor, i: int) -> dict[str, torch.Tensor]:
    ids = (int(y) * 16 + torch.arange(4) + (x[:4] > 0).long()) % 64  # ids carry the class
    return {"input_ids": ids, "labels": y}


class TwoInputs(nn.Module):
    """A model called with two inputs (features, a per-sample scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = ex.MLP()

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.mlp(x * scale[:, None])


SETUPS: dict[str, Callable[[], Training]] = {
    "dict": lambda: ex.setup(data=_loader(lambda x, y, i: {"features": x, "label": y}),
                             eval_data=_loader(lambda x, y, i: {"features": x, "label": y}, seed=1),
                             step=_step(lambda b: (b["features"], b["label"])), evaluate=_evaluate),
    "dict-unusual-keys": lambda: ex.setup(data=_loader(lambda x, y, i: {"obs": x, "cls": y}), inputs="obs",
                                          targets="cls", step=_step(lambda b: (b["obs"], b["cls"]))),
    "batch-encoding": lambda: ex.setup(model=TokenModel, data=_loader(_tokens, _encodings),
                                       step=_step(lambda b: (b["input_ids"], b["labels"]))),
    "namedtuple": lambda: ex.setup(data=_loader(lambda x, y, i: Pair(x, y, i)),
                                   step=_step(lambda b: (b.image, b.target))),
    "dataclass": lambda: ex.setup(data=_loader(lambda x, y, i: Sample(x, y),
                                               lambda s: Sample(torch.stack([r.pixel_values for r in s]),
                                                                torch.stack([r.labels for r in s]))),
                                  step=_step(lambda b: (b.pixel_values, b.labels))),
    "three-tuple": lambda: ex.setup(data=_loader(lambda x, y, i: (x, y, i)), step=_step(lambda b: (b[0], b[1]))),
    "nested": lambda: ex.setup(model=TwoInputs, data=_loader(lambda x, y, i: ((x, torch.tensor(1.0)), y)),
                               step=_two_input_step),
    "textbook-dict": lambda: ex.setup(data=_loader(lambda x, y, i: {"x": x, "y": y}), step=None),
    "regression-dict": lambda: ex.setup(model=lambda: ex.MLP(out=1), loss_fn=nn.MSELoss(),
                                        data=_loader(lambda x, y, i: {"x": x, "target": x[:2].sum(0, keepdim=True)}),
                                        step=_step(lambda b: (b["x"], b["target"]))),
}


def _evaluate(model: nn.Module, loader: Any) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for batch in loader:
            right += int((model(batch["features"]).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
    model.train()
    return right / total


def _two_input_step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    (x, scale), y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x, scale), y)
    loss.backward()
    optimizer.step()
    return loss


@pytest.mark.parametrize("name", list(SETUPS))
def test_every_default_check_is_clean_on_any_batch_shape_under_strict(name: str) -> None:
    report = run_checks(SETUPS[name](), strict=True)
    assert report.ok, report.describe_problems()
    assert not report.warnings, report.describe_problems()


def test_the_step_gets_the_batch_as_the_loader_yields_it() -> None:
    seen: list[Any] = []

    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        seen.append(batch)
        return _step(lambda b: (b["input_ids"], b["labels"]))(model, batch, optimizer, loss_fn)

    training = ex.setup(model=TokenModel, data=_loader(_tokens, _encodings), step=step)
    assert run_check("TRN101", prepare(training)).verdict is Verdict.PASS
    assert seen and all(isinstance(b, Encoding) and b.encodings is None for b in seen)
    assert set(seen[0]) == {"input_ids", "attention_mask", "labels"}


def test_batch_size_caps_every_per_sample_tensor_and_keeps_the_rest() -> None:
    batch = {"x": torch.zeros(10, 3), "y": torch.zeros(10), "vocab": torch.zeros(5), "name": "b"}
    data = prepare(ex.setup(data=[batch], batch_size=4)).batch
    assert data["x"].shape == (4, 3) and data["y"].shape == (4,) and data["vocab"].shape == (5,)
    assert data["name"] == "b"


@pytest.mark.parametrize(("batch", "spec", "role", "expected"), [
    ({"input_ids": 1, "labels": 2}, None, "inputs", 1),
    ({"pixel_values": 1, "label": 2}, None, "targets", 2),
    ({"Image": 1, "Y": 2}, None, "targets", 2),
    ((1, 2, 3), None, "targets", 2),
    ([1, 2], 1, "inputs", 2),
    ({"a": 1, "b": 2}, "b", "targets", 2),
    ({"a": 1, "b": 2}, lambda b: b["a"] + b["b"], "inputs", 3),
])
def test_locate_finds_usual_names_positions_and_declared_fields(batch: Any, spec: Any, role: str,
                                                               expected: Any) -> None:
    assert tb.locate(batch, spec, role) == expected


def test_zeroing_the_inputs_keeps_the_structure_and_the_targets() -> None:
    batch = Encoding({"input_ids": torch.ones(2, 3, dtype=torch.long), "mask": torch.ones(2, 3),
                      "labels": torch.ones(2, dtype=torch.long)})
    zeroed, count = tb.zero_part(batch, {"ids": batch["input_ids"]}, batch["labels"])
    assert isinstance(zeroed, Encoding) and count == 1
    assert zeroed["input_ids"].sum() == 0 and zeroed["mask"].sum() == 6 and zeroed["labels"].sum() == 2
    image = {"x": torch.ones(2, 3), "ids": torch.ones(2, dtype=torch.long)}
    zeroed, count = tb.zero_part(image, image, None)
    assert count == 1 and zeroed["x"].sum() == 0 and zeroed["ids"].sum() == 2  # floats only when there are floats


def test_checks_that_cannot_find_the_targets_skip_naming_the_field() -> None:
    data = _loader(lambda x, y, i: {"obs": x, "cls": y})
    training = ex.setup(data=data, step=_step(lambda b: (b["obs"], b["cls"])))
    report = run_checks(training, strict=True)
    assert report.ok, report.describe_problems()
    skipped = {r.code: r.message for r in report.results if r.verdict is Verdict.SKIP}
    assert "TRN408" in skipped and "Training(targets=...)" in skipped["TRN408"]
    assert report.get("TRN601").verdict is Verdict.PASS  # the step itself needs no declaration


def test_model_ignoring_dict_inputs_still_warns_through_zeroed_fields() -> None:
    def ignore(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        return _step(lambda b: (torch.zeros_like(b["features"]), b["label"]))(model, batch, optimizer, loss_fn)

    training = ex.setup(data=_loader(lambda x, y, i: {"features": x, "label": y}), step=ignore)
    assert run_check("TRN607", prepare(training)).verdict is Verdict.WARN


@pytest.mark.parametrize(("field", "value"), [("inputs", 1.5), ("targets", True), ("inputs", ["x"])])
def test_bad_field_specs_are_refused(field: str, value: Any) -> None:
    with pytest.raises(SetupError, match=f"`{field}` must be a key, an index or a function"):
        ex.setup(**{field: value})

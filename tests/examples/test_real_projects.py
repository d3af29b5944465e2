"""The real-project examples (examples/hf_text, ...) pass every check; their planted mistakes are caught."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import run_checks

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture()
def hf_text() -> Iterator[Any]:
    sys.path.insert(0, str(EXAMPLES / "hf_text"))
    try:
        from hf_text_example import train

        yield train
    finally:
        sys.path.remove(str(EXAMPLES / "hf_text"))


@pytest.fixture()
def gan() -> Iterator[Any]:
    sys.path.insert(0, str(EXAMPLES / "gan"))
    try:
        from gan_example import train

        yield train
    finally:
        sys.path.remove(str(EXAMPLES / "gan"))


def test_gan_with_two_optimizers_is_clean_under_strict(gan: Any) -> None:
    report = run_checks(gan.make_training(), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    for code in ("TRN101", "TRN102", "TRN103", "TRN602"):
        result = report.get(code)
        assert result.verdict is Verdict.PASS, code
        assert "`generator`" in result.message and "`discriminator`" in result.message


def test_gan_planted_mistake_names_the_generator(gan: Any) -> None:
    def no_generator_zero_grad(models: Any, batch: Any, optimizers: Any, loss_fn: Any = None) -> Any:
        original = optimizers["generator"].zero_grad
        optimizers["generator"].zero_grad = lambda *a, **k: None  # the planted mistake
        try:
            return gan.train_step(models, batch, optimizers)
        finally:
            optimizers["generator"].zero_grad = original

    training = gan.make_training()
    training.step = no_generator_zero_grad
    result = run_checks(training, select=["TRN101"]).get("TRN101")
    assert result.verdict is Verdict.FAIL, result.describe()
    assert result.message.startswith("optimizer `generator`") and result.evidence["optimizer"] == "generator"


def test_hf_shaped_project_is_clean_under_strict(hf_text: Any) -> None:
    report = run_checks(hf_text.make_training(), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    verdicts = {r.code: r.verdict for r in report.results}
    for code in ("TRN101", "TRN109", "TRN301", "TRN403", "TRN408", "TRN601", "TRN607"):
        assert verdicts[code] is Verdict.PASS, code


def test_hf_shaped_planted_mistake_is_a_cut_graph(hf_text: Any) -> None:
    def rebuilt_loss(model: Any, batch: Any, optimizer: Any, loss_fn: Any = None) -> Any:
        optimizer.zero_grad()
        out = model(**batch)
        loss = torch.tensor(out.loss.item(), requires_grad=True)
        loss.backward()
        optimizer.step()
        return loss

    training = hf_text.make_training()
    training.step = rebuilt_loss
    report = run_checks(training, select=["TRN103", "TRN109"])
    assert report.get("TRN103").verdict is Verdict.PASS
    cut = report.get("TRN109")
    assert cut.verdict is Verdict.FAIL and "leaf tensor" in cut.message and "`tokens.weight`" in cut.message

"""Mistakes the lint does not see yet, as the README's "Known limits" says (strict xfails).

When a rule learns one of these, its xfail turns into a failure: update the README's
known limits with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_traincheck.lint.testing import lint_source

README = Path(__file__).resolve().parents[2] / "README.md"

# The model and the step reach the loop as function parameters (modular user code).
MODULAR = '''
import torch

def train_step(model, batch, optimizer, loss_fn):
    inputs, targets = batch
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss

def train_epoch(model, loader, optimizer, loss_fn, step=train_step):
    model.train()
    for batch in loader:
        step(model, batch, optimizer, loss_fn)

def fit(model, loader, optimizer, loss_fn, epochs):
    for _ in range(epochs):
        train_epoch(model, loader, optimizer, loss_fn)
'''


def test_the_readme_names_the_gap() -> None:
    text = README.read_text(encoding="utf-8")
    assert "### Known limits" in text and "function parameters" in text


@pytest.mark.xfail(strict=True, reason="README known limits: model and step as function parameters")
def test_missing_zero_grad_in_a_step_reached_through_parameters() -> None:
    findings, _ = lint_source(MODULAR, ["TRN101"])
    assert [f.code for f in findings] == ["TRN101"]

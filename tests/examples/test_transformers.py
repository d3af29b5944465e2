"""A tiny randomly initialised BertForSequenceClassification through every check (when transformers is installed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import run_checks
from pytest_traincheck.harness.spec import Training

transformers = pytest.importorskip("transformers")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hf_text"


def _bert() -> Any:
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification(config)


def test_tiny_bert_with_dict_batches_is_clean_under_strict() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from hf_text_example.train import evaluate, loaders, train_step
    finally:
        sys.path.remove(str(EXAMPLE))
    torch.set_num_threads(1)
    train, test = loaders()
    training = Training(name="tiny-bert", model=_bert, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
                        data=train, eval_data=test, step=train_step, evaluate=evaluate)
    report = run_checks(training, strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    for code in ("TRN101", "TRN109", "TRN408", "TRN503", "TRN601"):
        assert report.get(code).verdict is Verdict.PASS, report.get(code).describe()

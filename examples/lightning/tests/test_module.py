"""Fast tests of the example project; the training checks run with `pytest --train-sanity`."""

from __future__ import annotations

import torch

from lightning_example.module import Classifier


def test_classifier_outputs_four_logits() -> None:
    assert Classifier()(torch.zeros(3, 16)).shape == (3, 4)

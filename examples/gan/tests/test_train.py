"""Fast tests of the example project; the training checks run with `pytest --train-sanity`."""

from __future__ import annotations

import torch

from gan_example.train import NOISE, make_models


def test_generator_makes_points_the_discriminator_scores() -> None:
    models = make_models()
    points = models["generator"](torch.zeros(5, NOISE))
    assert points.shape == (5, 2) and models["discriminator"](points).shape == (5, 1)

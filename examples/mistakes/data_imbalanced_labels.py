"""TRN407 class-imbalance: 90% of the training samples belong to one class and nothing compensates.

A three-class tabular problem (think "normal / fault A / fault B") with 1,800
normal samples and 100 of each fault. Trained with a plain
`CrossEntropyLoss()`, predicting "normal" everywhere already scores 90%
accuracy, so the rare classes are learned last or never. Weight the loss
(`CrossEntropyLoss(weight=...)`, inverse class frequency) or draw batches with
a `WeightedRandomSampler`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.fixtures.reference import train_step  # the reference step: only the labels are wrong

COUNTS = (1800, 100, 100)  # samples per class: the mistake is training on this as is
FEATURES = 8


def make_data() -> TensorDataset:
    """Return standardized features and labels drawn with the skewed class counts."""
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(COUNTS)])
    centers = torch.randn(len(COUNTS), FEATURES, generator=g)
    x = centers[labels] + torch.randn(len(labels), FEATURES, generator=g)
    x = (x - x.mean(0)) / x.std(0)  # features are standardized: only the labels are skewed
    return TensorDataset(x, labels)


def make_model() -> nn.Module:
    """Return a small MLP classifier."""
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, len(COUNTS)))


def make_training() -> Any:
    """Declare this setup for `pytest --train-sanity` (the mistake: an unweighted loss on skewed labels)."""
    from pytest_traincheck import Training

    generator = torch.Generator().manual_seed(0)
    return Training(
        name="data-imbalanced-labels",
        model=make_model,
        loss_fn=nn.CrossEntropyLoss(),  # no `weight=`: the 90% class dominates every batch
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        data=DataLoader(make_data(), batch_size=32, shuffle=True, generator=generator),
        step=train_step,
        num_classes=len(COUNTS),
    )


if __name__ == "__main__":
    from pytest_traincheck import run_checks

    print(run_checks(make_training(), select=["TRN407"]))

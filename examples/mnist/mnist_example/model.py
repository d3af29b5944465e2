"""A small convolutional digit classifier."""

from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    """Classify 1x28x28 digits: two conv -> BatchNorm -> ReLU -> pool blocks, then a linear head."""

    def __init__(self, num_classes: int = 10, channels: int = 8, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            # bias=False: the BatchNorm right after subtracts the mean, which cancels any bias.
            nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28x28 -> 14x14
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14 -> 7x7
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # flatten keeps dim 0 (the batch) and works on any memory layout, unlike a .view().
        x = torch.flatten(x, 1)
        # Return logits: CrossEntropyLoss applies log-softmax itself.
        return self.head(self.dropout(x))

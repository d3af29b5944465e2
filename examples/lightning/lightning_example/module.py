"""A LightningModule classifier with a warmup schedule, and its DataModule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def blobs(n: int, seed: int) -> TensorDataset:
    """Four separable Gaussian blobs in 16 dimensions."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centers = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 2
    return TensorDataset(centers[labels] + torch.randn(n, 16, generator=g), labels)


class Classifier(L.LightningModule):
    """An MLP classifier; AdamW with a per-step linear warmup."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / 10))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


class BlobData(L.LightningDataModule):
    """Shuffled training blobs and held-out validation blobs."""

    def setup(self, stage: str) -> None:
        self.train_set, self.val_set = blobs(512, seed=1), blobs(128, seed=2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


def make_training() -> Any:
    """Declare the module for `pytest --train-sanity`: no Trainer is built."""
    from pytest_traincheck import Training

    return Training.from_lightning(Classifier, datamodule=BlobData(), name="lightning-classifier")

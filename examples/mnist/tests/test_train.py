"""Fast tests of the example project; the training checks run with `pytest --train-sanity`."""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_example import train
from mnist_example.model import Net


def test_net_outputs_logits() -> None:
    out = Net().eval()(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)


def test_one_epoch_learns_and_checkpoint_resumes(tmp_path: Path) -> None:
    ckpt = tmp_path / "mnist.pt"
    accuracy = train.main(["--epochs", "1", "--batch-size", "128", "--lr", "3e-3", "--no-cuda",
                           "--save-model", str(ckpt), "--log-interval", "1000"])
    assert accuracy > 0.8
    model = Net()
    optimizer = train.make_optimizer(model.parameters())
    assert train.resume(model, optimizer, ckpt) == 1
    assert optimizer.state  # Adam's moments came back too

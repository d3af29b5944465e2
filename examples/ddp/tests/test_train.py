"""The example's own test: two epochs on 2 local ranks learn the blobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_two_ranks_train_to_high_accuracy() -> None:
    done = subprocess.run([sys.executable, "-m", "ddp_example.train", "--world-size", "2", "--epochs", "2"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1])
    assert accuracy > 0.9

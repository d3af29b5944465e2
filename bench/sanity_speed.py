"""Time the train-sanity checks: the whole suite per setup, and the harness's overhead per step.

Run by hand, not in CI:

    python bench/sanity_speed.py            # reference MNIST + a small LSTM setup
    python bench/sanity_speed.py --repeat 5

Prints, per setup, the wall time of the full check suite (every check that is
on by default, the same work as `pytest --train-sanity`, without pytest's own
start-up), the slowest checks, and the cost of one user step run plainly
versus under the harness's full instrumentation (step hooks, gradient hooks,
forward hooks, the loss and clip wrappers).
Targets: the suite on the reference MNIST setup under 20 s on 2 CPU cores;
the instrumented step at most 1.5x the plain step.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pytest_traincheck import Training, run_checks
from pytest_traincheck.harness.core import Harness, isolated
from pytest_traincheck.harness.runner import prepare


class TinyLSTM(nn.Module):
    """A small sequence classifier: 8 time steps of 16 features, 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def lstm_step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Callable[..., Any]) -> Any:
    """Train one batch with clipping, the right way for a recurrent model."""
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss


def lstm_training() -> Training:
    """Return the LSTM setup: synthetic sequences whose label is the sign pattern of two features."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, 16, generator=g)
    y = (x[:, :, 0].mean(1) > 0).long() * 2 + (x[:, :, 1].mean(1) > 0).long()
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    return Training(name="lstm", model=TinyLSTM, loss_fn=nn.CrossEntropyLoss(),
                    optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), data=batches, step=lstm_step)


def reference_training() -> Training:
    """Return the reference MNIST setup on the bundled sample."""
    from pytest_traincheck.fixtures.reference import make_training

    return make_training()


def time_suite(training: Training, repeat: int) -> tuple[float, list[tuple[str, float]]]:
    """Return the median seconds of the whole suite and the per-check durations of the last run."""
    times, report = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        report = run_checks(training)
        times.append(time.perf_counter() - start)
    assert report is not None
    slowest = sorted(((r.code, r.duration) for r in report.results), key=lambda kv: -kv[1])
    return statistics.median(times), slowest


def time_steps(training: Training, steps: int, repeat: int) -> tuple[float, float]:
    """Return the median seconds per user step, plain and under the harness's instrumentation.

    Plain and instrumented runs alternate ``repeat`` times, so that noise from the
    machine falls on both alike.
    """
    data = prepare(training, seed=0)
    step = training.step
    assert step is not None
    plain, instrumented = [], []
    with isolated(0):
        harness = Harness(data, seed=0, device="cpu")
        model = harness.model()
        optimizer = harness.optimizer(model)
        batch = harness.batch()
        step(model, batch, optimizer, training.loss_fn)  # warm up
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(steps):
                step(model, batch, optimizer, training.loss_fn)
            plain.append((time.perf_counter() - start) / steps)
            with harness.session() as session:
                session.train(2)  # warm up
                start = time.perf_counter()
                session.train(steps)
                instrumented.append((time.perf_counter() - start) / steps)
    return statistics.median(plain), statistics.median(instrumented)


REPO = Path(__file__).resolve().parent.parent


def time_pytest(folder: Path, repeat: int) -> float:
    """Return the median wall time of a whole `pytest --train-sanity` session in ``folder``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "--train-sanity", "-q", "-p", "no:cacheprovider"],
                       cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mistake_project(name: str) -> Path:
    """Copy one file of examples/mistakes into a temporary project that declares its setup."""
    folder = Path(tempfile.mkdtemp(prefix="traincheck-bench-"))
    shutil.copy(REPO / "examples" / "mistakes" / f"{name}.py", folder)
    (folder / "pyproject.toml").write_text(f'[tool.traincheck.sanity]\ntrainings = ["{name}:make_training"]\n')
    return folder


def main() -> int:
    """Run the timings and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeat {args.repeat}")
    print("| setup | checks | suite seconds (median) | plain step ms | instrumented step ms | overhead |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    slow: dict[str, list[tuple[str, float]]] = {}
    for name, factory in (("reference MNIST", reference_training), ("LSTM", lstm_training)):
        training = factory()
        seconds, slowest = time_suite(training, args.repeat)
        plain, instrumented = time_steps(training, args.steps, max(args.repeat, 5))
        slow[name] = slowest[:5]
        print(f"| {name} | {len(slowest)} | {seconds:.1f} | {plain * 1e3:.2f} | {instrumented * 1e3:.2f} "
              f"| {instrumented / plain:.2f}x |")
    for name, rows in slow.items():
        print(f"\nslowest checks, {name}: " + ", ".join(f"{code} {sec:.1f}s" for code, sec in rows))
    print("\n| whole `pytest --train-sanity` session (pytest start-up included) | seconds (median) |")
    print("| --- | ---: |")
    print(f"| examples/mnist (its own tests too) | {time_pytest(REPO / 'examples' / 'mnist', args.repeat):.1f} |")
    mistake = mistake_project("no_zero_grad")
    print(f"| examples/mistakes/no_zero_grad.py | {time_pytest(mistake, args.repeat):.1f} |")
    shutil.rmtree(mistake, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

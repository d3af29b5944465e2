"""Time `pytest --train-sanity` against one plain training step of the same setup, on three setups.

Run by hand, not in CI:

    python bench/sanity_speed.py                    # 2 threads, the three setups
    python bench/sanity_speed.py --threads 4 --repeat 3
    python bench/sanity_speed.py --src /path/to/other/src   # time another checkout's traincheck

For each setup (the reference MNIST model, torchvision's ResNet-18 at random init on
3x64x64 images in batches of 16, and a 4-layer transformer encoder of width 256 on
sequences of 64 tokens in batches of 16) it writes a tiny project declaring the
setup, then measures in one run: one plain training step (zero_grad, forward, loss,
backward, step; median of timed steps after warm-up) and the wall time of a whole
`pytest --train-sanity` session with the default checks in that project, pytest's
start-up included. The ratio (session / step) is what the ResNet-18 and transformer
target is stated in: at most 60 plain steps.

In the same run it times the start-up that no test suite can avoid: a fresh
`python -c "import torch"`, plus torchvision when the session imports it (an
untimed `python -X importtime -m pytest --collect-only` of the same project tells,
and writes the byte-code caches first, as a user's second run finds them). The
"suite" column is the session minus that start-up: what the checks, pytest and
traincheck cost, the figure the reference MNIST target (under 5 s) is stated in.
Every process runs with the same OMP_NUM_THREADS and with Python's byte-code cache
on (PYTHONDONTWRITEBYTECODE is dropped). On a machine shared with other jobs wall
times swing with the load (the load average is printed); the CPU-time columns (the
plain steps' process time, each process's user + system time) hardly do, which
makes them the steadier figures there (with one thread CPU time is about the wall
time of a quiet machine).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SETUPS_SOURCE = '''"""Setups timed by bench/sanity_speed.py (generated)."""

import torch
from torch import nn

from pytest_traincheck import Training


def step(model, batch, optimizer, loss_fn):
    inputs, targets = batch
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


class Encoder(nn.Module):
    """Token embedding + learned positions -> 4-layer transformer encoder -> mean pool -> classes."""

    def __init__(self, vocab=1000, width=256, layers=4, heads=4, length=64, classes=10):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(1, length, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.position).mean(1))


def _loader(x, y):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)


def resnet18():
    import torchvision

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 64, 64, generator=g), torch.randint(0, 10, (64,), generator=g)
    return Training(name="resnet18", model=lambda: torchvision.models.resnet18(num_classes=10),
                    loss_fn=nn.CrossEntropyLoss(), optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
                    data=_loader(x, y), step=step)


def transformer():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 1000, (64, 64), generator=g), torch.randint(0, 10, (64,), generator=g)
    return Training(name="transformer", model=Encoder, loss_fn=nn.CrossEntropyLoss(),
                    optimizer=lambda p: torch.optim.AdamW(p, lr=3e-4), data=_loader(x, y), step=step)


def mnist():
    from pytest_traincheck.fixtures.reference import make_training

    return make_training()
'''

SETUPS = (("reference MNIST", "mnist"), ("ResNet-18 (3x64x64, batch 16)", "resnet18"),
          ("transformer encoder (4x256, seq 64, batch 16)", "transformer"))


def project(factory: str) -> Path:
    """Write a tiny project whose pyproject declares one setup of `SETUPS_SOURCE`."""
    folder = Path(tempfile.mkdtemp(prefix="traincheck-bench-"))
    (folder / "bench_setups.py").write_text(SETUPS_SOURCE)
    (folder / "pyproject.toml").write_text(f'[tool.traincheck.sanity]\ntrainings = ["bench_setups:{factory}"]\n')
    return folder


def plain_step(training: Any, steps: int) -> tuple[float, float]:
    """Return the median wall and CPU seconds of one plain step of ``training`` (its own step, no traincheck)."""
    import torch

    torch.manual_seed(0)
    model = training.model()
    optimizer = training.optimizer(model.parameters())
    batch = next(iter(training.data))
    step: Callable[..., Any] = training.step
    for _ in range(3):  # warm-up: allocator, kernels, optimizer state
        step(model, batch, optimizer, training.loss_fn)
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(model, batch, optimizer, training.loss_fn)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), statistics.median(cpu)


def timed(command: list[str], folder: Path, env: dict[str, str]) -> tuple[float, float, Any]:
    """Run ``command`` in ``folder``; return its wall and CPU (user + system) seconds and the finished process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def startup_modules(folder: Path, env: dict[str, str]) -> list[str]:
    """Return torch, plus torchvision if the session imports it (and warm the byte-code caches, untimed)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pytest", "--train-sanity", "--collect-only",
                           "-q", "-p", "no:cacheprovider"], cwd=folder, env=env, capture_output=True, text=True)
    imported = set(re.findall(r"^import time:.*\|\s*(\w+)$", done.stderr, re.M))
    return ["torch"] + [name for name in ("torchvision",) if name in imported]


def startup(modules: list[str], folder: Path, env: dict[str, str]) -> tuple[float, float]:
    """Return the wall and CPU seconds of a fresh interpreter that only imports ``modules``."""
    seconds, cpu, _ = timed([sys.executable, "-c", f"import {', '.join(modules)}"], folder, env)
    return seconds, cpu


def pytest_session(folder: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Return the wall and CPU seconds of `pytest --train-sanity` in ``folder``, and its slowest items."""
    seconds, cpu, done = timed([sys.executable, "-m", "pytest", "--train-sanity", "-q", "-p", "no:cacheprovider",
                                "--durations=6", "--durations-min=0.05"], folder, env)
    slow = re.findall(r"^([\d.]+)s call\s+\S+::(TRN\d+)", done.stdout, re.M)
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|error).*?) in [\d.]+s", done.stdout, re.M)
    text = ", ".join(f"{code} {float(sec):.1f}s" for sec, code in slow[:6])
    return seconds, cpu, f"{summary[-1] if summary else 'no summary (rc ' + str(done.returncode) + ')'}; slowest: {text}"


def main() -> int:
    """Measure every setup and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for every process (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="pytest sessions per setup (median)")
    parser.add_argument("--steps", type=int, default=10, help="timed plain steps per setup")
    parser.add_argument("--src", help="the traincheck sources to time (default: this checkout's src)")
    parser.add_argument("--only", help="comma-separated setup keys: mnist, resnet18, transformer")
    args = parser.parse_args()
    src = Path(args.src or Path(__file__).resolve().parent.parent / "src").resolve()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(src))
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, traincheck from {src}, "
          f"load average {_load()}")
    print("| setup | plain step | `pytest --train-sanity` | in plain steps | start-up (imports) | suite "
          "(session - start-up) | CPU: step, session, ratio, start-up, suite |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    notes = []
    chosen = set(args.only.split(",")) if args.only else None
    for label, key in SETUPS:
        if chosen is not None and key not in chosen:
            continue
        folder = project(key)
        try:
            sys.path.insert(0, str(folder))
            module = __import__("bench_setups")
            step, step_cpu = plain_step(getattr(module, key)(), args.steps)
            sys.path.remove(str(folder))
            sys.modules.pop("bench_setups", None)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPATH"] = os.pathsep.join([str(folder), str(src)])
            modules = startup_modules(folder, env)
            runs = []
            for _ in range(args.repeat):  # start-up and session side by side, under the same load
                runs.append((startup(modules, folder, env), pytest_session(folder, env)))
            wall = statistics.median(session[0] for _, session in runs)
            cpu = statistics.median(session[1] for _, session in runs)
            start_wall = statistics.median(start[0] for start, _ in runs)
            start_cpu = statistics.median(start[1] for start, _ in runs)
            notes.append(f"{label}: {runs[-1][1][2]}")
            print(f"| {label} | {step * 1e3:.1f} ms | {wall:.1f} s | {wall / step:.0f} | {start_wall:.1f} s "
                  f"({' + '.join(modules)}) | {wall - start_wall:.1f} s | {step_cpu * 1e3:.1f} ms, {cpu:.1f} s, "
                  f"{cpu / step_cpu:.0f}, {start_cpu:.1f} s, {cpu - start_cpu:.1f} s |", flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    for note in notes:
        print(note)
    print(f"load average at the end: {_load()}")
    return 0


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())

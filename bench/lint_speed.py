"""Time `traincheck lint` against the libcst parse floor and the peer linters on the same corpus.

Run by hand, never in CI:

    python bench/lint_speed.py --fetch                  # unpack sources into bench/corpus/ (PyPI)
    python bench/lint_speed.py bench/corpus/torchvision  # time everything on one corpus
    python bench/lint_speed.py bench/corpus/transformers --only traincheck --memory

Peers run from their own virtual environment (`--peers-venv`, default
/tmp/peers: `python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torchfix fixit flake8`)
so their pinned dependencies never touch traincheck's. Each tool is timed as a
whole command (process start included), median of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
PACKAGES = ["torchvision==0.29.1", "transformers", "pytorch-lightning", "timm", "d2l", "skorch", "pytorch-ignite"]


def fetch() -> None:
    """Download wheels (no dependencies) and unpack their Python sources into bench/corpus/."""
    wheels = CORPUS / "_dl"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *PACKAGES], check=True)
    for wheel in wheels.glob("*.whl"):
        target = CORPUS / wheel.name.split("-")[0]
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(".py") and ".dist-info/" not in name:
                    archive.extract(name, target)
    print(f"corpus ready under {CORPUS}")


def _parse_one(path: str) -> int:
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    try:
        module = cst.parse_module(Path(path).read_bytes())
    except Exception:
        return 0
    MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    return 1


def parse_floor(files: list[str], workers: int) -> Callable[[], None]:
    """Return a function that parses every file and computes positions."""
    def run() -> None:
        if workers == 1:
            for path in files:
                _parse_one(path)
        else:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_parse_one, files, chunksize=max(1, len(files) // (workers * 8))))
    return run


def command(args: list[str], env: Optional[dict[str, str]] = None) -> Callable[[], None]:
    """Return a function that runs ``args`` and ignores its exit code (linters exit 1 on findings)."""
    # Byte-code caching on, as on a user's machine: an environment that turns it off would charge
    # every run for compiling each tool's modules again.
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run() -> None:
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return run


def median_time(run: Callable[[], None], repeat: int, before: Optional[Callable[[], None]] = None) -> float:
    """Return the median wall time of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _tree_rss_kb(root: int) -> int:
    """Return the summed resident memory of ``root`` and all its descendants, in kB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        pid, parent = int(entry), int(fields[1])
        children.setdefault(parent, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def peak_memory_mb(args: list[str], interval: float = 0.05) -> float:
    """Return the peak of the summed resident memory of ``args`` and its worker processes, in MB.

    The process tree is sampled every ``interval`` seconds, so a peak shorter than
    that may be missed; the workers live for the whole run, so their sum is what counts.
    """
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(interval)
    return peak / 1024


def main() -> int:
    """Parse arguments, run the timings, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path)
    parser.add_argument("--fetch", action="store_true", help="download and unpack the corpus, then exit")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peers-venv", type=Path, default=Path("/tmp/peers"))
    parser.add_argument("--only", choices=["traincheck", "all"], default="all")
    parser.add_argument("--memory", action="store_true", help="also measure traincheck's peak memory")
    args = parser.parse_args()
    if args.fetch:
        fetch()
        return 0
    if args.corpus is None:
        parser.error("give a corpus folder (or --fetch)")
    # bench/corpus/ is git-ignored, and Fixit honours .gitignore: lint a copy outside the repository.
    workdir = Path(tempfile.mkdtemp(prefix="traincheck-corpus-"))
    args.corpus = Path(shutil.copytree(args.corpus, workdir / args.corpus.name))
    files = sorted(str(p) for p in args.corpus.rglob("*.py"))
    lines = sum(len(Path(f).read_bytes().splitlines()) for f in files)
    cache = Path(tempfile.mkdtemp(prefix="traincheck-bench-"))
    tc = [sys.executable, "-m", "pytest_traincheck", "lint", str(args.corpus), "--isolated", "--select", "TRN",
          "-q", "--jobs", "2", "--cache-dir", str(cache)]
    rows: list[tuple[str, float]] = []
    rows.append(("libcst parse + positions, serial", median_time(parse_floor(files, 1), args.repeat)))
    rows.append(("libcst parse + positions, 2 workers", median_time(parse_floor(files, 2), args.repeat)))
    rows.append(("traincheck lint, cold (2 workers)",
                 median_time(command(tc), args.repeat, before=lambda: shutil.rmtree(cache, ignore_errors=True))))
    command(tc)()  # fill the cache
    rows.append(("traincheck lint, warm cache", median_time(command(tc), args.repeat)))
    peers = args.peers_venv / "bin"
    if args.only == "all" and peers.exists():
        rows.append(("torchfix", median_time(command([str(peers / "torchfix"), str(args.corpus)]), args.repeat)))
        rows.append(("flake8 --select=TOR", median_time(
            command([str(peers / "flake8"), "--select=TOR", "-j", "2", str(args.corpus)]), args.repeat)))
        rows.append(("fixit lint (default rules)", median_time(
            command([str(peers / "fixit"), "lint", str(args.corpus)]), args.repeat)))
    print(f"corpus: {args.corpus}  files: {len(files)}  lines: {lines}  cores: {os.cpu_count()}  repeat: {args.repeat}")
    print("| tool | seconds | lines/s |")
    print("| --- | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {lines / seconds:,.0f} |")
    table = dict(rows)
    floor = table["libcst parse + positions, 2 workers"]
    cold = table["traincheck lint, cold (2 workers)"]
    print(f"\ncold / 2-worker parse floor: {cold / floor:.2f}x (target <= 1.5x)")
    print(f"cold / warm: {cold / table['traincheck lint, warm cache']:.1f}x (target >= 20x)")
    if "flake8 --select=TOR" in table:
        fastest_peer = min(table["flake8 --select=TOR"], table["torchfix"])
        print(f"throughput vs TorchFix's faster mode: {fastest_peer / cold:.1f}x (target >= 3x)")
    if args.memory:
        shutil.rmtree(cache, ignore_errors=True)
        print(f"peak memory, cold, main process and workers summed: {peak_memory_mb(tc):.0f} MB (target < 1024 MB)")
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

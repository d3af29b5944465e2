"""Special files never hang or exhaust memory: FIFOs in a dataset, huge sparse sources, --jobs beyond the CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_traincheck.lint import engine


def test_data_check_reports_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    skio = pytest.importorskip("skimage.io")
    np = pytest.importorskip("numpy")
    images = tmp_path / "images"
    images.mkdir()
    skio.imsave(str(images / "a.png"), (np.arange(64).reshape(8, 8) * 3).astype("uint8"), check_contrast=False)
    os.mkfifo(images / "pipe.png")
    (tmp_path / "train.csv").write_text("file,label\na.png,0\npipe.png,1\n")
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest_traincheck", "data", "check", "train.csv",
                               "--root", "images"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("traincheck data check hung on a FIFO")
    assert "Traceback" not in proc.stderr
    assert "pipe.png" in proc.stdout and "not a regular file" in proc.stdout, proc.stdout


def test_a_huge_sparse_file_is_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.py"
    with open(path, "wb") as handle:
        handle.write(b"import torch\n")
        handle.truncate(engine.MAX_FILE_BYTES * 50)  # sparse: costs no disk
    real_read_bytes = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        assert self.stat().st_size <= engine.MAX_FILE_BYTES, f"{self} read whole"
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = engine.lint_file(path, "big.py", engine.Settings(("TRN901",)))
    assert [f.code for f in result.findings] == ["TRN000"] and "larger" in result.findings[0].message
    cached = engine.run_files([(path, "big.py")], engine.Settings(("TRN901",), cache_dir=str(tmp_path / "c")))
    assert [f.code for f in cached[0].findings] == ["TRN000"]


def test_jobs_are_capped_at_the_usable_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures

    seen: list[int] = []
    real = concurrent.futures.ProcessPoolExecutor

    def pool(max_workers: int) -> object:
        seen.append(max_workers)
        return real(max_workers=max_workers)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", pool)
    files = []
    for i in range(4):
        (tmp_path / f"f{i}.py").write_text("x = 1\n")
        files.append((tmp_path / f"f{i}.py", f"f{i}.py"))
    engine.run_files(files, engine.Settings(("TRN901",)), jobs=64)
    usable = len(os.sched_getaffinity(0))
    assert seen and max(seen) <= usable, (seen, usable)

"""`--fix` writes atomically: an interrupted write leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_traincheck.lint import fixer

OLD = "import torch\n" + "x = 1\n" * 200_000
NEW = "import torch\n" + "y = 2\n" * 200_000


def test_a_failure_during_the_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "train.py"
    target.write_text(OLD)

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        fixer.write_atomic(target, NEW)
    assert target.read_text() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["train.py"]


WRITER = """
import sys
from pathlib import Path
from pytest_traincheck.lint import fixer
target = Path(sys.argv[1])
texts = [Path(sys.argv[2]).read_text(), Path(sys.argv[3]).read_text()]
print("ready", flush=True)
i = 0
while True:
    fixer.write_atomic(target, texts[i % 2])
    i += 1
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killing_the_writer_never_leaves_a_torn_file(tmp_path: Path) -> None:
    target, old, new = tmp_path / "train.py", tmp_path / "old.txt", tmp_path / "new.txt"
    target.write_text(OLD)
    old.write_text(OLD)
    new.write_text(NEW)
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(old), str(new)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert target.read_text() in (OLD, NEW)  # whole, whichever write last completed

"""Fixtures every test folder shares: the in-process `traincheck` runner and one torch thread."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from pytest_traincheck import cli

Runner = Callable[..., subprocess.CompletedProcess]  # type: ignore[type-arg]


@pytest.fixture()
def traincheck(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    """Run ``traincheck ARGS`` in this process (fast): return what a subprocess run would.

    Standard input is empty unless ``stdin`` is given; a traceback or an internal error
    on stderr fails the test, whatever the exit code.
    """

    def runner(*args: str, cwd: Path, stdin: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((stdin or "").encode("utf-8")),
                                                           encoding="utf-8"))
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's own exits (usage errors, --version)
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "internal error" not in err, err
        return subprocess.CompletedProcess(list(args), code, out, err)

    return runner


@pytest.fixture()
def lint_runner(traincheck: Runner) -> Runner:
    """Run ``traincheck lint --no-cache ARGS`` in this process."""
    return lambda *args, **kwargs: traincheck("lint", "--no-cache", *args, **kwargs)


@contextlib.contextmanager
def _torch_threads(torch: Any, count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous count after (skips without torch).

    The models in the tests are tiny and gain nothing from more threads; on a busy
    2-core CI runner extra threads oversubscribe the cores (measured 10x slower).
    """
    with _torch_threads(pytest.importorskip("torch"), 1):
        yield


@pytest.fixture(autouse=True)
def _one_thread_once_torch_is_loaded() -> Iterator[None]:
    """Give every test that runs after torch was imported one torch thread; lint-only tests pay nothing."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    with _torch_threads(torch, 1):
        yield

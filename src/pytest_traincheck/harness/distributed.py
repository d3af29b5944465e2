"""Launch one distributed check on N local ranks and bring its verdict back, whatever the ranks do.

The parent (the pytest process) forks one process per rank (spawn where the platform
cannot fork; CPU ranks when CUDA is already initialised here, since a forked child
cannot use it). Each rank joins a process group through a file
store (no ports to race for), runs the check's collective part, and rank 0 concludes.
The parent watches every rank: a rank that dies, raises or outlives the budget ends
the check with an ERROR naming the rank and what it was running, and every rank's
whole process group (its DataLoader workers included) is killed before returning.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import tempfile
import time
import traceback
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Iterator, Optional

import torch

from pytest_traincheck.harness.check import CheckResult, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.core import Harness
    from pytest_traincheck.harness.ranks import DistributedCheck

__all__ = ["backend_for", "effective_world_size", "launch", "set_world_size"]

GRACE = 1.0  # seconds the other ranks get to report their own error once one rank failed
_WORLD_OVERRIDE: Optional[int] = None  # --train-sanity-world-size
_PR_SET_PDEATHSIG = 1
_GROUP_USED = False  # a world-of-one group ran in this process since the last launch


def set_world_size(world_size: Optional[int]) -> None:
    """Run every setup's distributed checks on ``world_size`` ranks (None: each setup's own)."""
    global _WORLD_OVERRIDE
    if world_size is not None and (not isinstance(world_size, int) or world_size < 1):
        raise ValueError(f"world size must be an int >= 1, got {world_size!r}")
    _WORLD_OVERRIDE = world_size


def effective_world_size(training: Any) -> int:
    """Return the number of ranks the distributed checks use for ``training``."""
    return _WORLD_OVERRIDE if _WORLD_OVERRIDE is not None else int(getattr(training, "world_size", 1) or 1)


def backend_for(device: torch.device, world: int) -> str:
    """Return nccl when every rank can have its own GPU, else gloo."""
    if device.type == "cuda" and torch.distributed.is_nccl_available() and torch.cuda.device_count() >= world:
        return "nccl"
    return "gloo"


def launch(check: DistributedCheck, h: Harness) -> CheckResult:
    """Run ``check`` on its ranks and return rank 0's conclusion, or an ERROR naming the failing rank."""
    world = effective_world_size(h.training)
    budget = h.clock.budget if h.clock.budget is not None else 600.0
    method = _start_method()
    device = h.device
    if device.type == "cuda" and method == "fork" and torch.cuda.is_initialized():
        # A forked child cannot use CUDA once this process has; the checks test the code, so CPU ranks do.
        device = torch.device("cpu")
    backend = backend_for(device, world)
    job = (type(check).__module__, type(check).__qualname__, h.data, h.seed, str(device), budget, backend, world)
    if method == "spawn":
        try:
            pickle.dumps(job)
        except Exception as exc:  # noqa: BLE001 - lambdas and local functions cannot be sent to spawned ranks
            return check.result(Verdict.ERROR, "setup error: this platform cannot fork, so the ranks are spawned "
                                f"and the setup must be pickled, which fails ({exc}); declare the setup's factories "
                                "as module-level functions")
    import gc

    import torch.nn.parallel.distributed  # noqa: F401 - imported once here, inherited by every forked rank

    # DDP models left from the single-process checks keep their world-of-one group (and gloo's worker
    # threads) alive until collected; a rank forked while they live can hang, so free them first.
    global _GROUP_USED
    if _GROUP_USED:
        gc.collect()
        _GROUP_USED = False

    ctx = multiprocessing.get_context(method)
    with tempfile.TemporaryDirectory(prefix="traincheck-ddp-") as tmp:
        ranks = []
        try:
            for rank in range(world):
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_rank_main, args=(rank, tmp, job, writer), daemon=True,
                                   name=f"traincheck-rank{rank}")
                proc.start()
                writer.close()
                ranks.append(_RankHandle(rank, proc, reader))
            result = _watch(check, ranks, budget, world, backend)
            if device != h.device and result.verdict is not Verdict.ERROR:
                result.evidence["rank_device"] = "cpu (CUDA was already initialised in this process)"
            return result
        finally:
            _stop(ranks)


class _RankHandle:
    """The parent's view of one rank: its process, its pipe and what it last said it was doing."""

    def __init__(self, rank: int, proc: Any, conn: Connection) -> None:
        self.rank, self.proc, self.conn = rank, proc, conn
        self.where = "starting"
        self.done = False
        self.payload: Any = None
        self.error: Optional[tuple[str, Optional[str], bool]] = None  # message, traceback, secondary

    def read(self) -> None:
        """Consume every message waiting on the pipe."""
        try:
            while self.conn.poll():
                kind, value = self.conn.recv()
                if kind == "where":
                    self.where = value
                elif kind == "done":
                    self.done, self.payload = True, value
                elif kind == "error":
                    self.error = value
        except (EOFError, OSError):
            pass


def _watch(check: DistributedCheck, ranks: list[_RankHandle], budget: float, world: int,
           backend: str) -> CheckResult:
    deadline = time.monotonic() + budget
    failed_at: Optional[float] = None
    while True:
        pending = [r for r in ranks if not r.done and r.error is None]
        if not pending:
            break
        now = time.monotonic()
        if now >= deadline or (failed_at is not None and now >= failed_at + GRACE):
            break
        timeout = min(deadline, failed_at + GRACE if failed_at is not None else deadline) - now
        wait([r.conn for r in pending] + [r.proc.sentinel for r in pending], timeout=max(timeout, 0.01))
        for r in pending:
            r.read()
            if r.done or r.error is not None or not r.proc.is_alive():
                r.read()
                if (r.error is not None or not r.done) and failed_at is None:
                    failed_at = time.monotonic()
    return _conclude(check, ranks, budget, world, backend)


def _conclude(check: DistributedCheck, ranks: list[_RankHandle], budget: float, world: int,
              backend: str) -> CheckResult:
    setting = f"{world} ranks, {backend}"
    # The cause first: a rank that died or raised, before the ranks whose collectives failed because of it.
    dead = [r for r in ranks if not r.done and r.error is None and r.proc.exitcode is not None]
    if dead:
        r = dead[0]
        return check.result(Verdict.ERROR, f"rank {r.rank} of {world} died ({_exit_text(r.proc.exitcode)}) while "
                            f"running {r.where}; the other ranks were stopped ({setting})")
    errors = sorted((r for r in ranks if r.error is not None), key=lambda r: r.error[2])  # type: ignore[index]
    if errors:
        first = errors[0]
        message, tb, _ = first.error  # type: ignore[misc]
        result = check.result(Verdict.ERROR, f"rank {first.rank} of {world}: {message}")
        result.traceback = tb
        return result
    hung = [r for r in ranks if not r.done]
    if hung:
        where = "; ".join(f"rank {r.rank} in {r.where}" for r in hung)
        return check.result(Verdict.ERROR, f"{len(hung)} of {world} ranks did not finish within the budget of "
                            f"{budget:g}s ({where}); a rank that hangs (or waits in a collective another rank never "
                            "reaches) was stopped; raise --train-sanity-budget if the setup is just slow")
    result = ranks[0].payload
    if not isinstance(result, CheckResult):
        return check.result(Verdict.ERROR, f"internal error in traincheck's {check.CODE} check: rank 0 sent no result")
    result.evidence.setdefault("world_size", world)
    result.evidence.setdefault("backend", backend)
    return result


def _exit_text(code: Optional[int]) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _stop(ranks: list[_RankHandle]) -> None:
    """Kill every rank's process group (its own children too) and reap the ranks."""
    for r in ranks:
        if r.proc.pid is None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(r.proc.pid, signal.SIGKILL)  # each rank leads its own group (setsid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(r.proc.pid, signal.SIGKILL)  # in case it died before setsid
    for r in ranks:
        r.proc.join(timeout=5)
        r.conn.close()


def _start_method() -> str:
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


# -- inside a rank ----------------------------------------------------------------------------------
def _rank_main(rank: int, tmp: str, job: tuple, conn: Connection) -> None:
    """Entry point of one rank: own process group, die with the parent, run the check, report."""
    os.setsid()
    _die_with_parent()
    module, qualname, data, seed, device, budget, backend, world = job
    torch.set_num_threads(1)  # N ranks share the machine's cores
    try:
        import importlib

        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        from pytest_traincheck.harness.ranks import run_rank

        result = run_rank(cls(), rank, world, tmp, data, seed, device, budget, backend,
                          lambda where: conn.send(("where", where)))
        conn.send(("done", result if rank == 0 else None))
    except BaseException as exc:  # noqa: BLE001 - anything a rank raises is reported, never lost
        conn.send(("error", _describe(exc)))
    finally:
        conn.close()


def _describe(exc: BaseException) -> tuple[str, Optional[str], bool]:
    from pytest_traincheck.harness.core import BudgetExceeded, UserCodeError
    from pytest_traincheck.harness.spec import SetupError

    if isinstance(exc, UserCodeError) and not _collective_failure(exc.original):
        return str(exc), exc.user_traceback, False
    if isinstance(exc, SetupError):
        return f"setup error: {exc}", None, False
    if isinstance(exc, BudgetExceeded):
        return str(exc), None, False
    if _collective_failure(exc) or isinstance(exc, UserCodeError):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"a collective failed ({first}), most likely because another rank stopped or hung", None, True
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"internal error: {type(exc).__name__}: {exc}", tb, False


def _collective_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in ("gloo", "timed out", "connection", "nccl",
                                                                     "peer", "socket"))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when the pytest process dies, so no rank outlives it."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def process_group(backend: str, store: str, rank: int, world: int, timeout: float) -> Iterator[None]:
    """Join a process group through a file store, with collective timeouts, and leave it after."""
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=max(timeout, 1.0)))
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


@contextlib.contextmanager
def single_rank(training: Any) -> Iterator[None]:
    """Give a distributed setup's single-process checks a process group of world size 1.

    Factories and steps written for DDP (`DistributedDataParallel(model)`,
    `dist.get_rank()`) then run unchanged; the group is left before any rank is forked.
    """
    import torch.distributed as dist

    if training is None or effective_world_size(training) < 2 or not dist.is_available() or dist.is_initialized():
        yield
        return
    global _GROUP_USED
    _GROUP_USED = True
    with tempfile.TemporaryDirectory(prefix="traincheck-rank0-") as tmp:
        with process_group("gloo", os.path.join(tmp, "store"), 0, 1, 60.0):
            yield

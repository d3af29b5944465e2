"""The distributed launcher: ranks that hang, die or raise end the check with an ERROR, and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from pytest_traincheck.harness import ddp_examples as dx  # noqa: E402
from pytest_traincheck.harness import examples as ex  # noqa: E402
from pytest_traincheck.harness.check import Verdict  # noqa: E402
from pytest_traincheck.harness.distributed import set_world_size  # noqa: E402
from pytest_traincheck.harness.runner import prepare, run_check, run_checks  # noqa: E402

pytest_plugins = ["pytester"]


def descendants(pid: int) -> set[int]:
    """Return every live descendant of ``pid``, read from /proc (no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":  # a zombie is already dead, only not reaped
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    before = descendants(os.getpid())
    yield
    left = descendants(os.getpid()) - before
    assert not left, f"processes left behind: {sorted(left)}"


def _on_rank(rank: int, action: Callable[[], Any]) -> Callable[..., Any]:
    def step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        if dist.get_rank() == rank:
            action()
        return ex.good_step(model, batch, optimizer, loss_fn)

    return step


def _sleep_forever() -> None:
    time.sleep(3600)


def _exit_3() -> None:
    os._exit(3)


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _raise() -> None:
    raise ValueError("rank-specific failure")


@pytest.mark.parametrize("world", [2, 3])
def test_a_hanging_rank_ends_the_check_at_the_budget(world: int) -> None:
    result = run_check("TRN701", prepare(dx.setup(world, step=_on_rank(world - 1, _sleep_forever))), budget=12)
    assert result.verdict is Verdict.ERROR, result.describe()
    assert "did not finish within the budget of 12s" in result.message
    assert f"rank {world - 1} in the training step" in result.message


@pytest.mark.parametrize(("action", "text"), [(_exit_3, "died (exit code 3)"), (_segfault, "died (killed by SIGSEGV)")])
def test_a_dying_rank_is_named_with_its_exit(action: Callable[[], None], text: str) -> None:
    result = run_check("TRN702", prepare(dx.setup(step=_on_rank(1, action))), budget=20)
    assert result.verdict is Verdict.ERROR
    assert result.message.startswith(f"rank 1 of 2 {text} while running the training step"), result.message


def test_a_raising_rank_reports_the_users_error_and_traceback() -> None:
    result = run_check("TRN701", prepare(dx.setup(3, step=_on_rank(2, _raise))), budget=20)
    assert result.verdict is Verdict.ERROR
    assert result.message.startswith("rank 2 of 3: the `step` function raised ValueError: rank-specific failure")
    assert result.traceback and "_raise" in result.traceback


def test_a_hanging_rank_takes_its_own_child_processes_down(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    def start_child_and_hang() -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        pidfile.write_text(str(child.pid))
        time.sleep(3600)

    result = run_check("TRN701", prepare(dx.setup(step=_on_rank(1, start_child_and_hang))), budget=12)
    assert result.verdict is Verdict.ERROR
    deadline = time.monotonic() + 5
    while alive(int(pidfile.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pidfile.read_text())), "the rank's child (reparented away from us) survived"


def test_single_process_setups_skip_the_distributed_checks() -> None:
    result = run_check("TRN701", prepare(ex.setup()))
    assert result.verdict is Verdict.SKIP and "world_size=2" in result.message


def test_world_size_override_runs_a_plain_setup_on_three_ranks() -> None:
    set_world_size(3)
    try:
        result = run_check("TRN702", prepare(ex.setup(optimizer=dx.sgd())))
    finally:
        set_world_size(None)
    assert result.verdict is Verdict.PASS, result.describe()
    assert result.evidence["world_size"] == 3 and result.evidence["backend"] == "gloo"


def test_single_process_checks_of_a_distributed_setup_run_in_a_world_of_one() -> None:
    # A factory that wraps DDP itself and a step that asks for the world size work unchanged.
    training = dx.setup(model=dx.ddp_model, step=dx.step_loss_over_world)
    report = run_checks(training, select=["TRN602", "TRN603", "TRN702"])
    assert report.get("TRN602").verdict is Verdict.PASS, report.describe_problems()
    assert report.get("TRN603").verdict is Verdict.PASS
    assert report.get("TRN702").verdict is Verdict.FAIL
    assert not dist.is_initialized()


def test_plugin_option_runs_the_distributed_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mysetup="from pytest_traincheck.harness import ddp_examples as dx\n"
                                "def make():\n    return [dx.setup(1, name='plain')]\n")
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    result = pytester.runpytest_subprocess("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-select",
                                           "TRN701,TRN702", "--train-sanity-world-size", "2", "-v")
    result.assert_outcomes(passed=2)
    bad = pytester.runpytest_subprocess("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-world-size", "0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--train-sanity-world-size: world size must be an int >= 1" in bad.stderr.str()


DDP_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp"


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_the_clean_ddp_example_passes_every_distributed_check_strictly(world: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DDP_EXAMPLE))
    from ddp_example.train import make_training

    training = make_training()
    training.world_size = world
    report = run_checks(training, select=["TRN7"], strict=True)
    assert [r.code for r in report.results] == ["TRN701", "TRN702", "TRN703", "TRN704", "TRN705", "TRN706"]
    assert all(r.verdict is Verdict.PASS for r in report.results), report.describe_problems()
    assert all(r.evidence["world_size"] == world for r in report.results)


@pytest.mark.slow
def test_the_ddp_example_through_pytest_one_item_per_check(pytester: pytest.Pytester) -> None:
    shutil.copytree(DDP_EXAMPLE / "ddp_example", pytester.path / "ddp_example")
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["ddp_example.train:make_training"]\n')
    result = pytester.runpytest_subprocess("--train-sanity", "--train-sanity-strict", "--train-sanity-select", "TRN7",
                                           "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*traincheck::ddp-example::TRN701-replicas-diverge PASSED*"])


def test_the_ddp_example_lints_clean_with_every_distributed_rule() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", "--isolated", "--extend-select", "TRN714",
                           str(DDP_EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_spawned_ranks_need_a_picklable_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_traincheck.harness import distributed

    monkeypatch.setattr(distributed, "_start_method", lambda: "spawn")
    result = run_check("TRN701", prepare(dx.setup()))
    assert result.verdict is Verdict.ERROR
    assert result.message.startswith("setup error: this platform cannot fork, so the ranks are spawned")
    assert "module-level functions" in result.message


class TinyTransformer(torch.nn.Module):
    """Embedding -> one encoder layer (dropout inside attention too) -> mean pool -> classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.encoder = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def _tokens() -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 50, (12, 6), generator=g), torch.arange(12) % 3)]


@pytest.mark.slow
def test_correct_real_models_raise_no_distributed_failure() -> None:
    # False failures are the worst bug: a transformer with attention dropout and a torchvision CNN with
    # BatchNorm, trained correctly, must pass (or skip with a reason), never fail.
    setups = [dx.setup(name="transformer", model=TinyTransformer, data=_tokens(), optimizer=ex.adam(1e-3))]
    try:
        import torchvision
    except ImportError:  # pragma: no cover - torchvision is optional
        torchvision = None
    if torchvision is not None:
        images = [(torch.randn(8, 3, 32, 32), torch.arange(8) % 10)]
        setups.append(dx.setup(name="resnet18", model=lambda: torchvision.models.resnet18(num_classes=10),
                               data=images, batch_size=8))
    report = run_checks(setups, select=["TRN701", "TRN702"], strict=True)
    assert report.ok, report.describe_problems()
    verdicts = {(r.setup, r.code): r.verdict for r in report.results}
    assert verdicts[("transformer", "TRN702")] is Verdict.PASS, report.summary()
    if torchvision is not None:
        assert verdicts[("resnet18", "TRN701")] is Verdict.PASS
        assert verdicts[("resnet18", "TRN702")] is Verdict.SKIP  # BatchNorm: per-shard statistics by design

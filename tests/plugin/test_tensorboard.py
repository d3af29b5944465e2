"""`--train-sanity-logdir`: TensorBoard event files read back, and the sparkline in the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytest.importorskip("tensorboard")

SETUPS = '''
import torch
from pytest_traincheck.harness import examples as ex

torch.set_num_threads(1)

def make():
    return [ex.setup("tiny")]
'''


def _events(run: Path) -> object:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_logdir_writes_the_overfit_curve_series_and_verdicts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mysetup=SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    logdir = pytester.path / "tb"
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-select",
                                "TRN601,TRN101", "--train-sanity-logdir", str(logdir), "--train-sanity-seed", "3",
                                "--train-sanity-report", "out.json")
    result.assert_outcomes(passed=2)
    report = json.loads((pytester.path / "out.json").read_text())
    curve = next(r["curve"] for r in report["results"] if r["code"] == "TRN601")
    # the summary shows the TRN601 curve as a sparkline next to its verdict
    line = next(x for x in result.outlines if "TRN601-cannot-overfit-single-batch  PASS" in x)
    assert any(ch in line for ch in "▁▂▃▄▅▆▇█")

    acc = _events(logdir / "tiny-seed3")
    scalars = acc.Tags()["scalars"]
    loss = acc.Scalars("overfit/loss")
    assert [e.step for e in loss] == list(range(1, len(curve) + 1))
    assert [e.value for e in loss] == pytest.approx(curve, rel=1e-6)
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert f"grad_norm/{name}" in scalars and f"update_ratio/{name}" in scalars
        assert len(acc.Scalars(f"grad_norm/{name}")) == len(curve)
    ratios = [e.value for e in acc.Scalars("update_ratio/fc1.weight")]
    assert all(0 < r < 1 for r in ratios)  # Adam moves weights by a fraction of their norm
    texts = acc.Tags()["tensors"]
    assert {"verdicts/TRN601/text_summary", "verdicts/TRN101/text_summary"} <= set(texts)
    verdict = acc.Tensors("verdicts/TRN101/text_summary")[0].tensor_proto.string_val[0].decode()
    assert verdict.startswith("**PASS** `TRN101-missing-zero-grad`")


def test_without_logdir_no_series_are_recorded() -> None:
    from pytest_traincheck.harness import examples as ex
    from pytest_traincheck.harness.runner import prepare, run_check

    series: dict[str, list[float]] = {}
    result = run_check("TRN601", prepare(ex.setup()), series=series)
    assert series and len(series["grad_norm/fc1.weight"]) == len(result.curve or [])
    # the plain call passes no dict: the harness attaches no recorder
    from pytest_traincheck.harness.core import Harness

    assert Harness(prepare(ex.setup())).series is None


def test_run_checks_api_writes_the_same_run(tmp_path: Path) -> None:
    from pytest_traincheck.harness import examples as ex
    from pytest_traincheck.harness.runner import run_checks

    report = run_checks(ex.setup("api run"), select=["TRN601"], logdir=str(tmp_path), seed=1)
    acc = _events(tmp_path / "api_run-seed1")
    assert [e.value for e in acc.Scalars("overfit/loss")] == pytest.approx(report.get("TRN601").curve, rel=1e-6)


def test_each_invocation_writes_a_fresh_run_folder(tmp_path: Path) -> None:
    from pytest_traincheck.harness import examples as ex
    from pytest_traincheck.harness.runner import run_checks

    for _ in range(3):
        run_checks(ex.setup("again"), select=["TRN601"], logdir=str(tmp_path), seed=1)
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == ["again-seed1", "again-seed1-run2", "again-seed1-run3"]
    for run in runs:  # one event file each: TensorBoard draws three curves, not one tangled one
        assert len(list((tmp_path / run).glob("events.out.tfevents.*"))) == 1


def test_rerunning_pytest_into_the_same_logdir_starts_a_new_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mysetup=SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    args = ("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-select", "TRN101",
            "--train-sanity-logdir", "tb")
    pytester.runpytest(*args).assert_outcomes(passed=1)
    pytester.runpytest(*args).assert_outcomes(passed=1)
    assert sorted(p.name for p in (pytester.path / "tb").iterdir()) == ["tiny-seed0", "tiny-seed0-run2"]


def test_missing_tensorboard_is_a_one_line_usage_error(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    pytester.makepyfile(mysetup=SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    result = pytester.runpytest("--train-sanity", "--train-sanity-logdir", "tb", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--train-sanity-logdir needs the `tensorboard` package: pip install tensorboard"])


def test_help_and_ini_key(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--train-sanity-logdir=LOGDIR*", "*train_sanity_logdir (string)*"])

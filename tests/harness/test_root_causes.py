"""One mistake reads as one failure: a cut graph is TRN109 (not TRN103), a crash blocks the other checks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.checks.graph_cut_before_loss import _detach_rewrap, _through_data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check, run_checks


def test_detached_output_is_a_cut_graph_not_a_missing_backward() -> None:
    report = run_checks(ex.setup(step=_detach_rewrap), select=["TRN103", "TRN109"])
    assert report.get("TRN103").verdict is Verdict.PASS, report.get("TRN103").describe()
    cut = report.get("TRN109")
    assert cut.verdict is Verdict.FAIL
    assert "`fc1.weight`" in cut.message and "shape (16, 3)" in cut.message and ".detach()" in cut.message


def test_loss_through_data_fails_once_and_blocks_the_checks_that_crash_on_it() -> None:
    report = run_checks(ex.setup(step=_through_data))
    problems = report.problems
    assert [r.code for r in problems] == ["TRN109"], report.describe_problems()
    assert "has no graph" in problems[0].message
    blocked = [r for r in report.results if r.message.startswith("blocked by TRN109")]
    assert len(blocked) >= 10
    assert all(r.verdict is Verdict.SKIP and "RuntimeError" in r.message for r in blocked)


def test_labels_one_to_c_read_as_one_label_failure() -> None:
    x, y = ex.blobs(64)
    data = DataLoader(TensorDataset(x, y + 1), batch_size=16, shuffle=True)  # labels 1..C for C outputs
    report = run_checks(ex.setup(data=data))
    assert [r.code for r in report.problems] == ["TRN408"], report.describe_problems()
    blocked = [r for r in report.results if r.message.startswith("blocked by TRN408")]
    assert len(blocked) >= 10 and all(r.verdict is Verdict.SKIP for r in blocked)


def test_a_step_that_crashes_for_no_known_reason_fails_once_with_its_traceback() -> None:
    def crash(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        raise ValueError("my step is broken")

    report = run_checks(ex.setup(step=crash))
    assert len(report.problems) == 1, report.describe_problems()
    first = report.problems[0]
    assert first.verdict is Verdict.ERROR and "ValueError: my step is broken" in (first.traceback or "")
    others = [r for r in report.results if r is not first and r.verdict is Verdict.SKIP]
    assert any(r.message.startswith(f"blocked by {first.code}: ValueError: my step is broken") for r in others)


def test_correct_setups_have_no_graph_cut() -> None:
    def frozen() -> nn.Module:
        model = ex.MLP()
        model.fc1.requires_grad_(False)
        return model

    for training in (ex.setup(), ex.setup(model=frozen), ex.setup(step=None)):
        result = run_check("TRN109", prepare(training))
        assert result.verdict in (Verdict.PASS, Verdict.SKIP), result.describe()


def test_two_losses_one_detached_branch_is_not_a_cut() -> None:
    def aux_detached(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        x, y = batch
        optimizer.zero_grad()
        out = model(x)
        loss = loss_fn(out, y) + 0.0 * out.detach().sum()  # a logged, detached term next to the real loss
        loss.backward()
        optimizer.step()
        return loss

    assert run_check("TRN109", prepare(ex.setup(step=aux_detached))).verdict is Verdict.PASS
    assert torch.is_grad_enabled()


def test_resume_difference_from_carried_gradients_points_to_trn101() -> None:
    from pytest_traincheck.checks.missing_zero_grad import _no_zero_grad

    result = run_check("TRN503", prepare(ex.setup(step=_no_zero_grad)))
    assert result.verdict is Verdict.FAIL
    assert "carried in `.grad`" in result.message and "TRN101" in result.message
    assert result.evidence["carried_gradients"] >= 1

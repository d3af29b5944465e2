"""TRN403, TRN503, TRN605, TRN606, TRN607 beyond their example setups: edge cases and the reference."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.activations import _dead_fraction, measure_relus
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.checks.gradient_flow import GradientFlow
from pytest_traincheck.harness.runner import prepare, run_check, run_checks
from pytest_traincheck.harness.sparkline import sparkline
from pytest_traincheck.harness.spec import SetupError

CODES = ["TRN403", "TRN503", "TRN605", "TRN606", "TRN607"]


def _run(code: str, **overrides: Any) -> Any:
    return run_check(code, prepare(ex.setup(**overrides)))


# -- the clean reference setup stays quiet ------------------------------------------------------------
def test_reference_mnist_setup_is_quiet() -> None:
    from pytest_traincheck.fixtures.reference import make_training

    report = run_checks(make_training(), select=CODES)
    verdicts = {r.code: r.verdict for r in report.results}
    assert set(verdicts) == set(CODES)
    assert all(v in (Verdict.PASS, Verdict.SKIP) for v in verdicts.values()), report.describe_problems()


# -- TRN403 ---------------------------------------------------------------------------------------------
class _Pooled(nn.Module):
    """Normalize each sample by the batch mean: mixes samples on purpose (eval mode too)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(ex.FEATURES, ex.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x - x.mean(0, keepdim=True))


def test_batch_statistics_in_forward_fail_and_name_both_samples() -> None:
    result = _run("TRN403", model=_Pooled)
    assert result.verdict is Verdict.FAIL
    assert result.evidence["sample"] != result.evidence["other_sample"]
    assert result.evidence["relative_leak"] > 1e-3


def test_token_ids_without_embedding_are_skipped_with_a_reason() -> None:
    class Counts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, ex.CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.float())

    tokens = torch.randint(0, 10, (ex.SAMPLES, 5), generator=torch.Generator().manual_seed(0))
    result = _run("TRN403", model=Counts, data=[(tokens, torch.arange(ex.SAMPLES) % ex.CLASSES)])
    assert result.verdict is Verdict.SKIP and "integers" in result.message


def test_output_without_batch_dimension_is_skipped() -> None:
    class Mean(ex.MLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).mean(0)

    result = _run("TRN403", model=Mean, step=None)
    assert result.verdict is Verdict.SKIP and "batch dimension" in result.message


# -- TRN503 ---------------------------------------------------------------------------------------------
def _save(model: Any, optimizer: Any, path: str) -> None:
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


def test_save_without_load_is_a_setup_error() -> None:
    with pytest.raises(SetupError, match="both `save_checkpoint` and `load_checkpoint`"):
        ex.setup(save_checkpoint=_save)


def test_a_load_that_restores_nothing_fails_before_the_step() -> None:
    result = _run("TRN503", save_checkpoint=_save, load_checkpoint=lambda model, optimizer, path: None)
    assert result.verdict is Verdict.FAIL and "does not restore the model" in result.message
    assert result.evidence["first_difference"] == "fc1.weight"


def test_a_raising_load_is_an_error_with_the_user_traceback() -> None:
    def load(model: Any, optimizer: Any, path: str) -> None:
        raise KeyError("state_dict")

    result = _run("TRN503", save_checkpoint=_save, load_checkpoint=load)
    assert result.verdict is Verdict.ERROR and "load_checkpoint" in result.message
    assert result.traceback and "KeyError" in result.traceback


def test_train_epoch_setups_resume_too() -> None:
    def train_epoch(model: Any, loader: Any, optimizer: Any, loss_fn: Any) -> None:
        for batch in loader:
            ex.good_step(model, batch, optimizer, loss_fn)

    assert _run("TRN503", step=None, train_epoch=train_epoch).verdict is Verdict.PASS


# -- TRN605 ---------------------------------------------------------------------------------------------
def test_gradient_flow_ignores_the_first_step_of_a_zero_initialized_head() -> None:
    check = GradientFlow()
    order = ["fc1.weight", "fc2.weight"]
    first_step = {"fc1.weight": 0.0, "fc2.weight": 0.1}
    healthy = {"fc1.weight": 0.01, "fc2.weight": 0.02}
    assert check._verdict([first_step, healthy, healthy], [0.01] * 3, order).verdict is Verdict.PASS
    vanishing = {"fc1.weight": 1e-9, "fc2.weight": 0.02}
    result = check._verdict([first_step, vanishing, vanishing], [0.01] * 3, order)
    assert result.verdict is Verdict.WARN and "fc1.weight" in result.message


def test_gradient_flow_needs_every_step_to_explode() -> None:
    check = GradientFlow()
    order = ["a", "b"]
    big, normal = {"a": 10.0, "b": 0.01}, {"a": 0.1, "b": 0.1}
    assert check._verdict([big, big, big], [1.0] * 3, order).verdict is Verdict.WARN
    assert check._verdict([big, big, normal], [1.0] * 3, order).verdict is Verdict.PASS


def test_gradient_flow_skips_single_layer_models() -> None:
    assert _run("TRN605", model=lambda: nn.Linear(ex.FEATURES, ex.CLASSES)).verdict is Verdict.SKIP


# -- TRN606 ---------------------------------------------------------------------------------------------
def test_conv_units_are_channels() -> None:
    out = torch.zeros(4, 3, 5, 5)
    out[1, 0, 2, 2] = 1.0  # channel 0 fires once: alive
    dead, units = _dead_fraction(out)
    assert units == 3 and float(dead) == pytest.approx(2 / 3)


def test_module_and_functional_relus_are_both_seen_and_named() -> None:
    model = nn.Sequential(nn.Linear(ex.FEATURES, 8), nn.ReLU(), nn.Linear(8, 8))

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.relu(self.body(x))

    model = Wrapped()
    layers = measure_relus(model, lambda: model(ex.blobs()[0]))
    assert [label for label, _, _ in layers] == ["body.1", "relu after body.2"]


def test_models_without_relu_are_skipped() -> None:
    model = lambda: nn.Sequential(nn.Linear(ex.FEATURES, 16), nn.Tanh(), nn.Linear(16, ex.CLASSES))  # noqa: E731
    assert _run("TRN606", model=model).verdict is Verdict.SKIP


# -- TRN607 ---------------------------------------------------------------------------------------------
def test_targets_learnable_without_inputs_are_skipped() -> None:
    x, _ = ex.blobs()
    result = _run("TRN607", data=[(x, torch.zeros(len(x), dtype=torch.long))])
    assert result.verdict is Verdict.SKIP and "without any input" in result.message


# -- sparkline ------------------------------------------------------------------------------------------
def test_missing_clipping_names_the_largest_norm_and_its_step() -> None:
    import re

    from pytest_traincheck.checks.missing_grad_clipping import rnn_setup

    result = run_check("TRN105", prepare(rnn_setup()))
    assert result.verdict is Verdict.WARN
    assert "at step 0." not in result.message  # a norm is not a step number
    assert re.search(r"the largest gradient norm was [0-9.e+-]+ \(step \d+\)", result.message), result.message


def test_sparkline_is_scaled_from_zero_and_bounded() -> None:
    assert sparkline([]) == "" and sparkline(None) == ""
    # A loss that fell only to 68 % of its start must not be drawn as if it reached the bottom.
    assert sparkline([2.42, 2.0, 1.65]) == "█▇▆"
    assert sparkline([1.0, 0.5, 0.0]) == "█▅▁"
    assert len(sparkline([float(i + 1) for i in range(500)], width=20)) == 20
    assert sparkline([1.0, float("nan")]).endswith("!")
    assert sparkline([2.0, 2.0]) == "██"
    assert sparkline([-1.0, -2.0]) == "█▁"  # negative losses (e.g. a log-likelihood): min to max
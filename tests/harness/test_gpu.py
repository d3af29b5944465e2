"""On a machine with CUDA, the checks run on the GPU and reach the CPU's verdicts (skipped elsewhere)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from pytest_traincheck import run_checks  # noqa: E402
from pytest_traincheck.harness import examples as ex  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _recording_step(devices: list[str]) -> Any:
    def step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        devices.append(f"{batch[0].device.type}/{next(model.parameters()).device.type}")
        return ex.good_step(model, batch, optimizer, loss_fn)

    return step


def test_checks_run_on_the_gpu_and_match_the_cpu_verdicts() -> None:
    devices: list[str] = []
    training = ex.setup(step=_recording_step(devices))
    on_gpu = run_checks(training, device="cuda")
    assert devices and set(devices) == {"cuda/cuda"}, devices
    on_cpu = run_checks(ex.setup(), device="cpu")
    verdicts = {r.code: r.verdict for r in on_cpu.results}
    assert {r.code: r.verdict for r in on_gpu.results} == verdicts


def test_a_mistake_is_caught_on_the_gpu_too() -> None:
    from pytest_traincheck.checks.missing_zero_grad import MissingZeroGrad

    failing = MissingZeroGrad.FAILING[0]
    training = failing() if callable(failing) else failing[0]()
    report = run_checks(training, select=["TRN101"], device="cuda")
    assert report.get("TRN101").verdict.value == "fail"

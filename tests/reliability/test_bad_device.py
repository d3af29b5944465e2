"""An unusable device is one clear setup error for every check, never a silent skip."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pytest_traincheck.harness import examples as ex  # noqa: E402
from pytest_traincheck.harness.check import Verdict  # noqa: E402
from pytest_traincheck.harness.runner import prepare, run_check  # noqa: E402


@pytest.mark.parametrize("device", ["tpu0", f"cuda:{torch.cuda.device_count() + 7}"])
def test_an_unusable_device_is_a_setup_error(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("without CUDA a cuda device is a skip (CPU CI); an index beyond the GPUs needs CUDA")
    result = run_check("TRN601", prepare(ex.setup()), device=device)
    assert result.verdict is Verdict.ERROR, (result.verdict, result.message)
    assert "setup error" in result.message and device in result.message, result.message

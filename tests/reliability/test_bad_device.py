"""An unusable device is one clear setup error for every check, never a silent skip."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pytest_traincheck.harness import examples as ex  # noqa: E402
from pytest_traincheck.harness.check import Verdict  # noqa: E402
from pytest_traincheck.harness.runner import prepare, run_check  # noqa: E402


@pytest.mark.parametrize("device", ["tpu0", f"cuda:{torch.cuda.device_count() + 7}"])
def test_an_unusable_device_is_a_setup_error(device: str) -> None:
    result = run_check("TRN601", prepare(ex.setup()), device=device)
    assert result.verdict is Verdict.ERROR, (result.verdict, result.message)
    assert "setup error" in result.message and device in result.message, result.message


def test_a_bare_cuda_without_cuda_is_a_skip_not_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_check("TRN601", prepare(ex.setup()), device="cuda")
    assert result.verdict is Verdict.SKIP and "CUDA is not available" in result.message, result.message


def _meta_model() -> torch.nn.Module:
    with torch.device("meta"):
        return ex.MLP()


def test_a_model_on_the_meta_device_is_one_setup_error() -> None:
    from pytest_traincheck.harness.runner import Runner

    runner = Runner(budget=5.0)
    results = [runner.run(code, ex.setup(model=_meta_model), key="meta") for code in ("TRN601", "TRN101")]
    for result in results:
        assert result.verdict is Verdict.ERROR, (result.verdict, result.message)
        assert result.message.startswith("setup error: the `model` factory returned a model on the meta device")
        assert "\n" not in result.message and result.traceback is None


def test_a_batch_on_the_meta_device_is_one_setup_error() -> None:
    from pytest_traincheck.harness.runner import Runner

    x, y = torch.empty(8, 4, device="meta"), torch.empty(8, dtype=torch.long, device="meta")
    result = Runner(budget=5.0).run("TRN601", ex.setup(data=[(x, y)]))
    assert result.verdict is Verdict.ERROR
    assert result.message == ("setup error: `data` yields tensors on the meta device, which hold no data; "
                              "traincheck needs batches with real values")


def test_the_meta_device_option_is_one_setup_error() -> None:
    result = run_check("TRN601", prepare(ex.setup()), device="meta")
    assert result.verdict is Verdict.ERROR and result.message.startswith("setup error: device 'meta' holds no data")

"""The distributed checks on real-project shapes: several models and optimizers, schedulers, accumulation."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from torch import nn  # noqa: E402

from pytest_traincheck.checks.scheduler_step_misordered import _step_then, _warmup  # noqa: E402
from pytest_traincheck.harness import ddp_examples as dx  # noqa: E402
from pytest_traincheck.harness import examples as ex  # noqa: E402
from pytest_traincheck.harness.check import Verdict  # noqa: E402
from pytest_traincheck.harness.runner import prepare, run_check  # noqa: E402
from pytest_traincheck.harness.spec import Training  # noqa: E402

GAN = Path(__file__).resolve().parents[2] / "examples" / "gan"
K = 2


@pytest.fixture()
def gan() -> Iterator[Any]:
    sys.path.insert(0, str(GAN))
    try:
        from gan_example import train

        yield train
    finally:
        sys.path.remove(str(GAN))


def test_a_gan_on_two_ranks_wraps_each_model_and_is_clean(gan: Any) -> None:
    training = dataclasses.replace(gan.make_training(), world_size=2)
    result = run_check("TRN701", prepare(training))
    assert result.verdict is Verdict.PASS, result.describe()
    # The step draws its noise per call (and per shard size): no single-process step to compare with.
    result = run_check("TRN702", prepare(training))
    assert result.verdict is Verdict.SKIP and "not deterministic" in result.message, result.describe()


def test_a_gan_whose_discriminator_bypasses_ddp_diverges(gan: Any) -> None:
    def step(models: Any, batch: Any, optimizers: Any, loss_fn: Any = None) -> Any:
        raw = nn.ModuleDict({"generator": models["generator"], "discriminator": models["discriminator"].module})
        return gan.train_step(raw, batch, optimizers)  # the discriminator's gradients are never all-reduced

    training = dataclasses.replace(gan.make_training(), world_size=2, step=step)
    result = run_check("TRN701", prepare(training))
    assert result.verdict is Verdict.FAIL and "`discriminator." in result.message, result.describe()


def test_several_optimizers_over_one_model_on_two_ranks() -> None:
    from tests.harness.test_optimizers import LIST, TwoHeads, _both

    result = run_check("TRN701", prepare(dx.setup(model=TwoHeads, optimizer=LIST, step=_both())))
    assert result.verdict is Verdict.PASS, result.describe()


def test_a_step_that_takes_its_scheduler_gets_it_on_every_rank() -> None:
    training = dx.setup(step=_step_then("optimizer first"), scheduler=_warmup)
    for code in ("TRN701", "TRN702"):
        result = run_check(code, prepare(training))
        assert result.verdict is Verdict.PASS, result.describe()


def _accumulating(sync_last: bool = True) -> Any:
    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any, step_index: int) -> Any:
        x, y = batch
        last = (step_index + 1) % K == 0
        sync = model.no_sync() if not (last and sync_last) else torch.enable_grad()
        with sync:  # DDP all-reduces only on the micro-step that updates
            loss = loss_fn(model(x), y)
            (loss / K).backward()
        if last:
            optimizer.step()
            optimizer.zero_grad()
        return loss
    return step


def test_accumulate_calls_the_step_k_times_per_update_on_every_rank() -> None:
    training = dx.setup(step=_accumulating(), accumulate=K)
    for code in ("TRN701", "TRN702"):
        result = run_check(code, prepare(training))
        assert result.verdict is Verdict.PASS, result.describe()


def test_accumulation_that_never_syncs_still_diverges() -> None:
    result = run_check("TRN701", prepare(dx.setup(step=_accumulating(sync_last=False), accumulate=K)))
    assert result.verdict is Verdict.FAIL, result.describe()


def test_a_lightning_setup_on_several_ranks_is_one_clear_skip() -> None:
    from tests.harness.test_lightning import Duck, _loader

    training = Training.from_lightning(Duck, train_dataloader=_loader(), world_size=2)
    result = run_check("TRN701", prepare(training))
    assert result.verdict is Verdict.SKIP and "without Lightning's DDP strategy" in result.message
    assert "\n" not in result.message and result.traceback is None

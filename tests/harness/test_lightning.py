"""Training.from_lightning: a LightningModule's own hooks through the checks, without a Trainer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check, run_checks
from pytest_traincheck.harness.spec import SetupError, Training

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightning"


def _loader(seed: int = 0) -> DataLoader:
    x, y = ex.blobs(64)
    return DataLoader(TensorDataset(x + 0.01 * seed, y), batch_size=16, shuffle=True)


class Duck(nn.Module):
    """Shaped like a LightningModule (no lightning import): automatic optimization, tuple-form config."""

    def __init__(self) -> None:
        super().__init__()
        self.net = ex.MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss)
        return {"loss": loss}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50)
        return [opt], [{"scheduler": sched, "interval": "step"}]


class ManualGan(nn.Module):
    """Manual optimization with two optimizers and their schedulers, stepped inside training_step."""

    automatic_optimization = False

    def __init__(self, scheduler_first: bool = False) -> None:
        super().__init__()
        self.scheduler_first = scheduler_first
        self.g = nn.Linear(4, ex.FEATURES)
        self.d = nn.Linear(ex.FEATURES, 1)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        noise = torch.randn(len(x), 4)
        opt_d.zero_grad()
        real, fake = self.d(x), self.d(self.g(noise).detach())
        d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        self.manual_backward(d_loss)
        if self.scheduler_first:
            sched_d.step()
        opt_d.step()
        if not self.scheduler_first:
            sched_d.step()
        opt_g.zero_grad()
        fooled = self.d(self.g(noise))
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        self.manual_backward(g_loss)
        opt_g.step()
        sched_g.step()

    def configure_optimizers(self) -> Any:
        opt_g = torch.optim.Adam(self.g.parameters(), lr=1e-3)
        opt_d = torch.optim.Adam(self.d.parameters(), lr=1e-3)
        return ({"optimizer": opt_g, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt_g, 10)},
                {"optimizer": opt_d, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt_d, 10),
                                                      "interval": "step"}})


def test_a_lightning_shaped_module_runs_every_check_clean() -> None:
    training = Training.from_lightning(Duck, train_dataloader=_loader(), val_dataloader=_loader(1))
    report = run_checks(training, strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    for code in ("TRN101", "TRN301", "TRN503", "TRN601"):
        assert report.get(code).verdict is Verdict.PASS, code


def test_manual_optimization_names_each_optimizer_and_judges_the_scheduler_order() -> None:
    good = Training.from_lightning(ManualGan, train_dataloader=_loader())
    assert run_check("TRN108", prepare(good)).verdict is Verdict.PASS
    result = run_check("TRN101", prepare(good))
    assert result.verdict is Verdict.PASS and "optimizer `optimizer[1]`" in result.message
    bad = Training.from_lightning(lambda: ManualGan(scheduler_first=True), train_dataloader=_loader(), name="bad")
    with pytest.warns(UserWarning):
        assert run_check("TRN108", prepare(bad)).verdict is Verdict.FAIL


def test_from_lightning_refuses_what_is_not_a_module_with_data() -> None:
    with pytest.raises(SetupError, match="no `training_step`"):
        Training.from_lightning(lambda: nn.Linear(2, 2), train_dataloader=_loader())
    with pytest.raises(SetupError, match="needs training data"):
        Training.from_lightning(Duck)


@pytest.fixture()
def lightning_example() -> Iterator[Any]:
    pytest.importorskip("lightning")
    sys.path.insert(0, str(EXAMPLE))
    try:
        from lightning_example import module

        yield module
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_lightning_example_is_clean_without_a_trainer(lightning_example: Any) -> None:
    report = run_checks(lightning_example.make_training(), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN302").verdict is Verdict.PASS  # validation_step ran, as Lightning's loop runs it


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_lightning_example_planted_mistake_is_one_failure(lightning_example: Any) -> None:
    class Detached(lightning_example.Classifier):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return super().training_step(batch, batch_idx).detach()  # the planted mistake

    training = Training.from_lightning(Detached, datamodule=lightning_example.BlobData())
    report = run_checks(training)
    assert [r.code for r in report.problems] == ["TRN109"], report.describe_problems()


# -- Lightning's scheduling: intervals, frequency, epoch ends -----------------------------------
class Scheduled(Duck):
    """Automatic optimization with one scheduler config in a chosen Lightning form."""

    def __init__(self, form: str = "bare", step_in_training_step: bool = False) -> None:
        super().__init__()
        self.form, self.step_in_training_step = form, step_in_training_step

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.step_in_training_step:  # the mistake: Lightning steps it too, after optimizer.step()
            self.lr_schedulers().step()
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.5)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        if self.form == "bare":  # interval "epoch" by default
            return [opt], [sched]
        if self.form == "epoch dict":
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 2}}


def _lrs_after(module_factory: Any, calls: int, loader: Any = None) -> list[float]:
    """Run the adapter's step ``calls`` times through a session; return the learning rate after each."""
    from pytest_traincheck.harness.core import Harness, SetupData

    training = Training.from_lightning(module_factory, train_dataloader=_loader() if loader is None else loader)
    h = Harness(SetupData.load(training, 0))
    lrs = []
    with h.session() as s:
        for _ in range(calls):
            s.step()
            lrs.append(s.optimizer.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("form", ["bare", "epoch dict"])
def test_epoch_schedulers_advance_at_each_epoch_end(form: str) -> None:
    # The loader has 4 batches: Lightning steps an "epoch" scheduler after the 4th, 8th... batch.
    assert _lrs_after(lambda: Scheduled(form), 9) == [0.5] * 3 + [0.25] * 4 + [0.125] * 2


def test_step_schedulers_honour_their_frequency() -> None:
    assert _lrs_after(lambda: Scheduled("step every 2"), 5) == [0.5, 0.25, 0.25, 0.125, 0.125]


def test_a_loader_without_length_never_ends_an_epoch() -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[Any]:
            yield from zip(*ex.blobs(64))

    assert _lrs_after(lambda: Scheduled("bare"), 6, DataLoader(Stream(), batch_size=16)) == [0.5] * 6


@pytest.mark.parametrize("form", ["bare", "epoch dict", "step every 2"])
def test_scheduled_lightning_modules_are_clean_under_strict(form: str) -> None:
    training = Training.from_lightning(lambda: Scheduled(form), train_dataloader=_loader(), val_dataloader=_loader(1),
                                       name=form.replace(" ", "-"))
    report = run_checks(training, strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    # TRN503 resumes after 3 of the loader's 4 batches: the next batch ends the epoch in both runs.
    for code in ("TRN108", "TRN503"):
        assert report.get(code).verdict is Verdict.PASS, report.get(code).describe()


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_a_scheduler_stepped_in_training_step_under_automatic_optimization_fails() -> None:
    training = Training.from_lightning(lambda: Scheduled("epoch dict", step_in_training_step=True),
                                       train_dataloader=_loader())
    result = run_check("TRN108", prepare(training))
    assert result.verdict is Verdict.FAIL and "remove the call from training_step" in result.message


class EpochGan(ManualGan):
    """Manual optimization that steps its schedulers once per epoch, in on_train_epoch_end (or never)."""

    def __init__(self, step_schedulers: bool = True) -> None:
        super().__init__()
        self.step_schedulers = step_schedulers

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        noise = torch.randn(len(x), 4)
        opt_d.zero_grad()
        real, fake = self.d(x), self.d(self.g(noise).detach())
        d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        self.manual_backward(d_loss)
        opt_d.step()
        opt_g.zero_grad()
        fooled = self.d(self.g(noise))
        self.manual_backward(F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled)))
        opt_g.step()

    def on_train_epoch_end(self) -> None:
        if self.step_schedulers:
            for sched in self.lr_schedulers():
                sched.step()

    def configure_optimizers(self) -> Any:
        opt_g = torch.optim.Adam(self.g.parameters(), lr=1e-3)
        opt_d = torch.optim.Adam(self.d.parameters(), lr=1e-3)
        return [opt_g, opt_d], [torch.optim.lr_scheduler.StepLR(opt_g, 1), torch.optim.lr_scheduler.StepLR(opt_d, 1)]


def test_manual_optimization_stepping_schedulers_per_epoch_is_clean() -> None:
    training = Training.from_lightning(EpochGan, train_dataloader=_loader())
    for code in ("TRN108", "TRN503"):
        result = run_check(code, prepare(training))
        assert result.verdict is Verdict.PASS, result.describe()


def test_manual_optimization_that_never_steps_its_schedulers_fails() -> None:
    training = Training.from_lightning(lambda: EpochGan(step_schedulers=False), train_dataloader=_loader())
    result = run_check("TRN108", prepare(training))
    assert result.verdict is Verdict.FAIL and "Lightning steps no scheduler" in result.message
    assert "`scheduler[0]`, `scheduler[1]`" in result.message


def test_plateau_schedulers_step_on_the_logged_metric() -> None:
    class Plateau(Duck):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.5)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "loss"}}

    # `loss` is logged by training_step; the adapter steps the plateau scheduler with it at each epoch end.
    lrs = _lrs_after(Plateau, 12)
    assert lrs[:3] == [0.5] * 3 and min(lrs) <= 0.5
    result = run_check("TRN108", prepare(Training.from_lightning(Plateau, train_dataloader=_loader())))
    assert result.verdict is Verdict.PASS, result.describe()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_real_lightning_module_with_an_epoch_scheduler_is_clean(lightning_example: Any) -> None:
    class Epochs(lightning_example.Classifier):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
            return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20)]

    report = run_checks(Training.from_lightning(Epochs, datamodule=lightning_example.BlobData()), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN108").verdict is Verdict.PASS and report.get("TRN503").verdict is Verdict.PASS


def test_an_epoch_end_hook_that_reads_the_trainer_is_not_a_failure(lightning_example: Any) -> None:
    import lightning as L

    class TrainerHook(L.LightningModule):
        automatic_optimization = False

        def __init__(self) -> None:
            super().__init__()
            self.net = ex.MLP()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            opt = self.optimizers()
            x, y = batch
            opt.zero_grad()
            loss = F.cross_entropy(self.net(x), y)
            self.manual_backward(loss)
            opt.step()
            return loss

        def on_train_epoch_end(self) -> None:
            if self.trainer.current_epoch % 2 == 0:  # needs Lightning's Trainer
                self.lr_schedulers().step()

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 10)]

    report = run_checks(Training.from_lightning(TrainerHook, train_dataloader=_loader()), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    result = report.get("TRN108")
    assert result.verdict is Verdict.SKIP and "reads the Trainer" in result.message, result.describe()


class NoForward(nn.Module):
    """A LightningModule-shaped module that defines no forward(): training_step calls `self.net`."""

    def __init__(self, net: Any = None) -> None:
        super().__init__()
        self.net = net() if net is not None else ex.MLP()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.05)


def test_a_module_without_forward_is_clean_and_its_layers_are_judged() -> None:
    report = run_checks(Training.from_lightning(NoForward, train_dataloader=_loader()), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert "model `net`" in report.get("TRN403").message and report.get("TRN606").verdict is Verdict.PASS


def test_a_module_without_forward_whose_network_mixes_samples_fails() -> None:
    from pytest_traincheck.checks.view_as_permute import TransposeReshapeMLP

    training = Training.from_lightning(lambda: NoForward(TransposeReshapeMLP), train_dataloader=_loader())
    result = run_check("TRN403", prepare(training))
    assert result.verdict is Verdict.FAIL and result.evidence["model"] == "net", result.describe()


def test_accumulate_is_lightning_s_accumulate_grad_batches() -> None:
    # 4 batches per epoch, 2 per update; Lightning counts a "step" scheduler's frequency (2) in batches, so
    # it halves the rate at every update.
    training = Training.from_lightning(lambda: Scheduled("step every 2"), train_dataloader=_loader(), accumulate=2)
    report = run_checks(training, strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert report.get("TRN101").verdict is Verdict.PASS and report.get("TRN108").verdict is Verdict.PASS
    from pytest_traincheck.harness.core import Harness, SetupData

    h = Harness(SetupData.load(training, 0))
    with h.session() as s:
        lrs = []
        for _ in range(4):  # one update per session step (2 calls each)
            s.step()
            lrs.append(s.optimizer.param_groups[0]["lr"])
        assert len(s.trace.steps) == 4
    assert lrs == [0.25, 0.125, 0.0625, 0.03125]

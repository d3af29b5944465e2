"""Several optimizers and models: dicts and lists, each optimizer judged and named."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check, run_checks
from pytest_traincheck.harness.spec import SetupError


class TwoHeads(nn.Module):
    """A body and a head trained by two optimizers over one model."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(ex.FEATURES, 32), nn.ReLU())
        self.head = nn.Linear(32, ex.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _both(clear_head: bool = True) -> Any:
    def step(model: nn.Module, batch: Any, optimizers: list[Any], loss_fn: Any) -> Any:
        x, y = batch
        optimizers[0].zero_grad()
        if clear_head:
            optimizers[1].zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        for opt in optimizers:
            opt.step()
        return loss
    return step


# Several optimizers over one model: each factory receives the model and picks its part.
LIST = [lambda m: torch.optim.Adam(m.body.parameters(), lr=0.05), lambda m: torch.optim.SGD(m.head.parameters(), lr=0.1)]


def test_a_list_of_optimizers_over_one_model_is_clean() -> None:
    report = run_checks(ex.setup(model=TwoHeads, optimizer=LIST, step=_both()), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    assert "optimizer `optimizer[1]`" in report.get("TRN101").message


def test_the_optimizer_that_is_never_cleared_is_named() -> None:
    result = run_check("TRN101", prepare(ex.setup(model=TwoHeads, optimizer=LIST, step=_both(clear_head=False))))
    assert result.verdict is Verdict.FAIL and result.evidence["optimizer"] == "optimizer[1]"
    assert "`head.weight.grad`" in result.message


def test_parameters_in_no_optimizer_are_found_across_all_of_them() -> None:
    only_body = [LIST[0]]
    result = run_check("TRN602", prepare(ex.setup(model=TwoHeads, optimizer=only_body, step=_both())))
    assert result.verdict is Verdict.FAIL and "not in the optimizer" in result.message


@pytest.mark.parametrize(("optimizer", "match"), [
    ({}, "dict or list of factories"),
    ([torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)], "dict or list of factories"),
])
def test_bad_optimizer_collections_are_refused(optimizer: Any, match: str) -> None:
    with pytest.raises(SetupError, match=match):
        ex.setup(optimizer=optimizer)


def test_a_factory_returning_a_dict_of_models_gets_a_module_dict() -> None:
    seen: list[Any] = []

    def step(models: Any, batch: Any, optimizers: Any, loss_fn: Any) -> Any:
        seen.append((type(models).__name__, sorted(optimizers)))
        x, y = batch
        for opt in optimizers.values():
            opt.zero_grad()
        loss = loss_fn(models["b"](models["a"](x)), y)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        return loss

    training = ex.setup(model=lambda: {"a": nn.Linear(ex.FEATURES, 16), "b": nn.Linear(16, ex.CLASSES)},
                        optimizer={"a": ex.adam(), "b": ex.adam()}, step=step)
    assert run_check("TRN101", prepare(training)).verdict is Verdict.PASS
    assert seen[0] == ("ModuleDict", ["a", "b"])


# -- checks that call the models themselves: each model of a dict, on what the step gave it -------------
GAN = ex.FEATURES


class MixingCritic(nn.Module):
    """A discriminator that normalises each feature over the batch by hand, mixing samples (in eval mode too)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(GAN, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x - x.mean(0)) / (x.std(0) + 1e-5))


def _gan(critic: Any = None, dead_generator: bool = False) -> Any:
    def models() -> dict[str, nn.Module]:
        generator = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, GAN))
        if dead_generator:
            nn.init.constant_(generator[0].bias, -10.0)
        disc = critic() if critic is not None else nn.Sequential(nn.Linear(GAN, 32), nn.ReLU(), nn.Linear(32, 1))
        return {"generator": generator, "discriminator": disc}

    def step(m: Any, batch: Any, opts: Any, loss_fn: Any) -> Any:
        real = batch[0]
        noise = torch.randn(len(real), 4)
        opts["discriminator"].zero_grad()
        real_out, fake_out = m["discriminator"](real), m["discriminator"](m["generator"](noise).detach())
        d_loss = (torch.nn.functional.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
                  + torch.nn.functional.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out)))
        d_loss.backward()
        opts["discriminator"].step()
        opts["generator"].zero_grad()
        fooled = m["discriminator"](m["generator"](noise))
        g_loss = torch.nn.functional.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        g_loss.backward()
        opts["generator"].step()
        return d_loss + g_loss

    return ex.setup(name="gan", model=models, optimizer={"generator": ex.adam(1e-3), "discriminator": ex.adam(1e-3)},
                    step=step, loss_fn=None)


def test_a_gan_with_relus_is_judged_model_by_model_and_clean() -> None:
    for code in ("TRN403", "TRN606"):
        result = run_check(code, prepare(_gan()))
        assert result.verdict is Verdict.PASS, result.describe()
    assert "`generator`, `discriminator`" in run_check("TRN403", prepare(_gan())).message


def test_the_model_of_a_gan_that_mixes_samples_is_named() -> None:
    result = run_check("TRN403", prepare(_gan(MixingCritic)))
    assert result.verdict is Verdict.FAIL and result.evidence["model"] == "discriminator", result.describe()


def test_the_dead_relu_layer_of_a_gan_names_its_model() -> None:
    result = run_check("TRN606", prepare(_gan(dead_generator=True)))
    assert result.verdict is Verdict.WARN and "`generator." in result.message, result.describe()


# -- TRN601/TRN607 with several optimizers: judged when they minimize one loss together -------------------
def test_several_optimizers_on_one_loss_must_fit_the_batch() -> None:
    report = run_checks(ex.two_models(), strict=True)
    assert report.ok and not report.warnings, report.describe_problems()
    for code in ("TRN601", "TRN607"):
        assert report.get(code).verdict is Verdict.PASS, report.get(code).describe()


def test_a_gan_is_skipped_for_its_several_objectives_with_the_evidence() -> None:
    result = run_check("TRN601", prepare(_gan()))
    assert result.verdict is Verdict.SKIP and "backward() calls for optimizer steps" in result.message


def test_optimizers_stepping_in_turn_are_several_objectives() -> None:
    def alternating(m: Any, batch: Any, opts: Any, loss_fn: Any, step_index: int) -> Any:
        x, y = batch
        which = "body" if step_index % 2 == 0 else "head"  # one player per call, as some GAN loops do
        opts[which].zero_grad()
        loss = loss_fn(m["head"](m["body"](x)), y)
        loss.backward()
        opts[which].step()
        return loss

    result = run_check("TRN601", prepare(dataclasses.replace(ex.two_models(), step=alternating)))
    assert result.verdict is Verdict.SKIP and "`body` " in result.message, result.describe()

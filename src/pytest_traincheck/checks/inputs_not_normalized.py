"""TRN402: training inputs far from zero mean and unit variance (CHECKS.md D16)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness
from pytest_traincheck.harness.datapass import HEAD_BATCHES, HEAD_SAMPLES, sample

BATCHES, SAMPLES = HEAD_BATCHES, HEAD_SAMPLES  # the head of the shared pass, whose inputs it keeps
BANDS = {"max_abs_mean": 10.0, "min_std": 0.05, "max_std": 20.0}


@dataclass
class Stats:
    """Per-channel means and stds of float inputs, and their overall range."""

    means: torch.Tensor
    stds: torch.Tensor
    low: float
    high: float
    image: bool  # (N, C, H, W)-like: channels on dim 1, small-std bound judged per channel

    @classmethod
    def of(cls, x: torch.Tensor) -> Stats:
        """Compute the stats of a batch of inputs, over finite values only."""
        image = x.ndim >= 4
        # Channels: dim 1 for images/video; the last (feature) dim for tables and sequences.
        values = x.transpose(0, 1) if image else x.movedim(-1, 0) if x.ndim >= 2 else x.unsqueeze(0)
        values = values.reshape(len(values), -1).double()
        finite = torch.isfinite(values)
        count = finite.sum(1).clamp(min=1)
        clean = torch.where(finite, values, torch.zeros_like(values))
        means = clean.sum(1) / count
        var = torch.where(finite, (values - means[:, None]) ** 2, torch.zeros_like(values)).sum(1) / count
        kept = values[finite]
        low, high = (float(kept.min()), float(kept.max())) if kept.numel() else (0.0, 0.0)
        return cls(means, var.sqrt(), low, high, image)

    def problem(self, classifier: bool, bands: dict[str, float]) -> Optional[str]:
        """Say what is wrong with these inputs' scale, or None."""
        worst = int(self.means.abs().argmax())
        if float(self.means[worst].abs()) > bands["max_abs_mean"]:
            return f"channel {worst} has mean {float(self.means[worst]):.4g} (|mean| > {bands['max_abs_mean']:g})"
        widest = int(self.stds.argmax())
        if float(self.stds[widest]) > bands["max_std"]:
            return f"channel {widest} has std {float(self.stds[widest]):.4g} (> {bands['max_std']:g})"
        varying = self.stds[self.stds > 0]  # constant channels (padding, borders) carry no scale
        small = float(varying.min()) if self.image and len(varying) else float(self.overall_std())
        if 0 < small < bands["min_std"]:
            return f"the inputs vary by std {small:.3g} only (< {bands['min_std']:g}): the signal is squashed"
        if classifier and self.image and self.low >= 0 and self.high <= 1 and self.high > 0.5:
            return (f"every value lies in [0, 1] (min {self.low:.3g}, max {self.high:.3g}, mean "
                    f"{float(self.means.mean()):.3g}): this looks like `ToTensor()` output without `Normalize`")
        return None

    def overall_std(self) -> float:
        """Return the root-mean-square of the channel stds."""
        return float((self.stds ** 2).mean().sqrt()) if len(self.stds) else 0.0


def _pixels(scale: float, shift: float = 0.0, n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % ex.CLASSES
    x = torch.rand(n, 1, 6, 6, generator=g) * scale + shift + y.view(-1, 1, 1, 1) * 0.1 * scale
    return TensorDataset(x, y)


def _image_setup(scale: float, shift: float = 0.0, **kw: Any) -> Any:
    model = lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, ex.CLASSES))
    fields = dict(model=model, data=DataLoader(_pixels(scale, shift), batch_size=16, shuffle=True))
    fields.update(kw)
    return ex.setup(**fields)


def _model_normalizes() -> Any:
    # Raw 0..255 pixels, standardized by the model's first (BatchNorm) layer: fine.
    model = lambda: nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(36, ex.CLASSES))
    return _image_setup(255.0, model=model)


def _autoencoder() -> Any:
    # [0, 1] images reconstructed with BCE: that range is required, not a mistake.
    x = _pixels(0.7)[:][0]
    model = lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 36), nn.Unflatten(1, (1, 6, 6)))
    return ex.setup(model=model, loss_fn=nn.BCEWithLogitsLoss(), data=[(x, x)], task="regression")


class InputsNotNormalized(Check):
    """Warn when training inputs are far from zero mean and unit variance (raw pixels, [0, 1] images).

    ## What it measures
    Reads up to 4 batches (512 samples) of training inputs and measures each channel's mean and
    standard deviation, and also the input the first Linear/Conv layer receives (normalization
    inside the model counts). Classifier images whose values all lie in [0, 1] look like
    `ToTensor()` output without `Normalize`.

    ## Why it matters
    Inputs far from zero mean and unit variance (raw 0..255 pixels, raw physical units) make the
    first layer's gradients huge or tiny next to the others: training is slow or unstable with the
    default initialization and learning rates.

    ## Thresholds
    Warns when a channel has |mean| > 10, std > 20 or std < 0.05, or for [0, 1] classifier images.
    The bands change per setup: `Training(..., options={"TRN402": {"max_abs_mean": 3, "min_std":
    0.1, "max_std": 10}})`. It warns; `--train-sanity-strict` makes the warning fail the run. Turn
    the check off with `--train-sanity-ignore TRN402` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Regression and autoencoder setups (float targets) are exempt from the [0, 1] image warning,
    since [0, 1] is often their range on purpose. Off by default in `traincheck lint`, on here.

    ## Example
    ```python
    transforms.Compose([transforms.ToTensor()])   # no transforms.Normalize(mean, std)
    ```
    """

    CODE = "TRN402"
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(), lambda: ex.setup(data=[(ex.blobs()[0] / 3, ex.blobs()[1])]),
               lambda: _image_setup(2.0, -1.0), _model_normalizes, _autoencoder)
    FAILING = (lambda: _image_setup(255.0), lambda: _image_setup(0.7), lambda: _image_setup(0.02, -0.01),
               lambda: ex.setup(data=[(ex.blobs()[0] * 40 + 100, ex.blobs()[1])]),
               lambda: ex.setup(data=[(ex.blobs()[0] + 5, ex.blobs()[1])], options={"TRN402": {"max_abs_mean": 3}}))

    def run(self, h: Harness) -> CheckResult:
        drawn = sample(h, "data", SAMPLES, BATCHES)
        x = torch.cat(drawn.inputs) if len({t.shape[1:] for t in drawn.inputs}) == 1 else drawn.inputs[0]
        if not x.is_floating_point():
            return self.skipped(f"the inputs are {x.dtype} (token ids or raw integers), not float features")
        classifier = _data.classification(h.training, drawn.targets[0]) is not None
        stats = Stats.of(x)
        bands = {**BANDS, **h.training.options.get(self.CODE, {})}
        problem = stats.problem(classifier, bands)
        facts = dict(samples=len(x), mean=float(stats.means.mean()), std=stats.overall_std(),
                     min=stats.low, max=stats.high, channels=len(stats.means))
        if problem is None:
            return self.passed(f"inputs over {len(x)} samples: mean {facts['mean']:.3g}, std {facts['std']:.3g}",
                               **facts)
        inner = self._model_side(h, classifier, bands)
        if inner is not None:
            return self.passed(f"the data is not normalized ({problem}), but the model standardizes it before "
                               f"its first weight layer (mean {inner[0]:.3g}, std {inner[1]:.3g} there)", **facts)
        return self.warned(f"training inputs over {len(x)} samples: {problem}; standardize them to mean ~0 and "
                           "std ~1, e.g. `transforms.Normalize(mean, std)` with the training set's statistics",
                           **facts)

    @staticmethod
    def _model_side(h: Harness, classifier: bool, bands: dict[str, float]) -> Optional[tuple[float, float]]:
        """Return the mean/std the first weight layer sees if the model normalized the inputs itself."""
        model = h.model()  # train mode: a leading BatchNorm standardizes with batch statistics
        x = h.input_tensor()
        with torch.no_grad():
            seen = _data.first_weight_layer_input(model, x, lambda t: h.forward(model))
        if seen is None or not seen.is_floating_point() or seen.numel() == x.numel() and torch.equal(
                seen.reshape(-1), x.reshape(-1)):
            return None
        stats = Stats.of(seen.reshape(len(seen), -1))
        overall = (float(stats.means.mean()), stats.overall_std())
        inside = abs(overall[0]) <= bands["max_abs_mean"] and bands["min_std"] <= overall[1] <= bands["max_std"]
        return overall if inside and not (classifier and stats.low >= 0 and stats.high <= 1) else None

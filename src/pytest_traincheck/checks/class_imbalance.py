"""TRN407: a heavily skewed label distribution in the training data (CHECKS.md D16)."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult, Verdict
from pytest_traincheck.harness.core import Harness
from pytest_traincheck.harness.datapass import sample

MIN_RATIO = 0.1  # rarest/most common below this: deepchecks' imbalance threshold


def _skewed(n: int = 220) -> TensorDataset:
    # 200 samples of class 0, 10 of class 1, 10 of class 2: ratio 0.05.
    y = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(10, dtype=torch.long), torch.full((10,), 2)])
    x, _ = ex.blobs(n)
    return TensorDataset(x, y[torch.randperm(n, generator=torch.Generator().manual_seed(0))])


def _balanced_by_sampler() -> Any:
    data = _skewed()
    counts = torch.bincount(data.tensors[1]).double()
    weights = (1.0 / counts)[data.tensors[1]]
    sampler = WeightedRandomSampler(weights, num_samples=len(data), generator=torch.Generator().manual_seed(0))
    return ex.setup(data=DataLoader(data, batch_size=32, sampler=sampler))


def _weighted_loss() -> Any:
    return ex.setup(data=DataLoader(_skewed(), batch_size=32, shuffle=True),
                    loss_fn=nn.CrossEntropyLoss(weight=torch.tensor([0.1, 2.0, 2.0])))


def _many_classes() -> Any:
    # 1000 balanced classes, 2048 of 3000 samples read: about 2 per class, many 0, by chance only.
    x, y = ex.blobs(3000, classes=1000)
    loader = DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True)
    return ex.setup(model=lambda: ex.MLP(out=1000), data=loader, num_classes=1000)


def _missing_class() -> Any:
    x, y = ex.blobs(96)
    return ex.setup(data=DataLoader(TensorDataset(x, y % 2), batch_size=32, shuffle=True), num_classes=3)


class ClassImbalance(Check):
    """Warn when the rarest training label is under a tenth as frequent as the commonest.

    ## What it measures
    Counts the labels of up to 2048 training samples as the loader yields them (so a
    `WeightedRandomSampler` already balances them) and compares the rarest class with the commonest.
    When the sample is not the whole dataset the ratio is judged conservatively (two Poisson
    standard deviations in the data's favour).

    ## Why it matters
    With a heavy skew the model can reach a low loss by predicting the common class; accuracy looks
    good and the rare classes are never learnt.

    ## Thresholds
    Warns when rarest/commonest < 0.1, or a declared class never appears. A class-weighted loss
    counts as handled. It warns; `--train-sanity-strict` makes the warning fail the run. Fixed; turn
    the check off with `--train-sanity-ignore TRN407` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Classification only; the class count comes from the loss input width or `num_classes`. Skews
    that are real and handled in another way (focal loss, a custom sampler yielding skewed batches
    on purpose) are flagged.

    ## Example
    ```python
    Training(..., data=DataLoader(skewed_set, batch_size=32, shuffle=True))
    ```
    """

    CODE = "TRN407"
    FAILS_WITH = Verdict.WARN
    PASSING = (lambda: ex.setup(), _balanced_by_sampler, _weighted_loss, _many_classes)
    FAILING = (lambda: ex.setup(data=DataLoader(_skewed(), batch_size=32, shuffle=True)), _missing_class)

    def run(self, h: Harness) -> CheckResult:
        t = h.training
        reason = _data.one_shot_reason(t.data)
        if reason is not None:
            return self.skipped(reason)
        task = _data.classification(t, h.target_tensor())
        if task is None:
            return self.skipped("not a classification setup (the loss and targets are not class labels)")
        if self._weighted(t.loss_fn):
            return self.passed("the loss is class-weighted (`weight=`/`pos_weight=`): imbalance is handled")
        drawn = sample(h, "data", _data.max_samples(t, self.CODE), inputs=False)
        if not drawn.exhausted and _data.sequential(t.data):
            return self.skipped(f"the loader reads in index order and only {drawn.samples} samples were read: "
                                "a prefix says nothing about the label distribution (see TRN401)")
        whole = drawn.all_targets()
        labels = _data.per_sample_labels(whole) if whole is not None else None
        if labels is None:
            return self.skipped("the targets are not one label per sample (dense or multi-label targets)")
        if labels.is_floating_point() and not bool(((labels == 0) | (labels == 1)).all()):
            return self.skipped("float targets that are not 0/1 labels (soft labels or scores)")
        return self._judge(self._counts(labels, t.num_classes, task), drawn)

    @staticmethod
    def _weighted(loss_fn: Any) -> bool:
        return any(isinstance(getattr(loss_fn, name, None), torch.Tensor) for name in ("weight", "pos_weight"))

    @staticmethod
    def _counts(labels: torch.Tensor, declared: Optional[int], task: str) -> dict[int, int]:
        values = labels.long().tolist()
        classes = set(range(declared if task == "classification" and declared else 2 if task == "binary" else 0))
        counts = {c: 0 for c in classes | set(values)}
        for v in values:
            counts[v] += 1
        return dict(sorted(counts.items()))

    def _judge(self, counts: dict[int, int], drawn: _data.Draw) -> CheckResult:
        rare, common = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
        n_rare, n_common = counts[rare], counts[common]
        ratio = n_rare / n_common if n_common else 1.0
        # Judge the ratio the counts could still come from (2 sigma) unless the whole dataset was read.
        bound = ratio if drawn.exhausted else (
            (n_rare + 2 * math.sqrt(n_rare) + 1) / max(n_common - 2 * math.sqrt(n_common), 1.0))
        facts = dict(samples=drawn.samples, classes=len(counts), rarest_class=rare, rarest_count=n_rare,
                     commonest_class=common, commonest_count=n_common, ratio=ratio, whole_dataset=drawn.exhausted)
        if len(counts) < 2 or bound >= MIN_RATIO:
            noise = "" if ratio >= MIN_RATIO else (
                f", within sampling noise for {drawn.samples / len(counts):.3g} samples per class")
            return self.passed(f"labels over {drawn.samples} samples: rarest/commonest = {ratio:.3g}{noise}",
                               **facts)
        weights = _data.class_weights(counts)
        shown = ", ".join(f"{weights.get(c, 0.0):.3g}" for c in counts)
        missing = [c for c, n in counts.items() if n == 0]
        absent = f"; class(es) {missing[:10]} never appear" if missing else ""
        return self.warned(
            f"over {drawn.samples} training samples, class {rare} has {n_rare} and class {common} has "
            f"{n_common} (ratio {ratio:.3g} < {MIN_RATIO:g}){absent}: the model can score well by ignoring rare "
            f"classes; weight the loss, e.g. `CrossEntropyLoss(weight=torch.tensor([{shown}]))` (inverse "
            "frequency, mean 1), or oversample with `WeightedRandomSampler`", class_weights=shown, **facts)

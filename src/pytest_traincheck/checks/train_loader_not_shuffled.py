"""TRN401: the training loader yields the same sample order every epoch (CHECKS.md D16)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness
from pytest_traincheck.harness.datapass import HEAD_BATCHES, sample

BATCHES = HEAD_BATCHES  # per epoch: enough to see an order, cheap on any dataset
MIN_DISTINCT = 6  # below this many distinct samples a shuffled order repeats by chance (1/6! here)


def _sorted_data(n: int = 48) -> TensorDataset:
    x, y = ex.blobs(n)
    order = torch.argsort(y, stable=True)  # stored class by class, as many datasets are on disk
    return TensorDataset(x[order], y[order])


def _shuffled() -> Any:
    return ex.setup(data=DataLoader(_sorted_data(), batch_size=8, shuffle=True))


def _seeded_shuffle() -> Any:
    generator = torch.Generator().manual_seed(0)
    return ex.setup(data=DataLoader(_sorted_data(), batch_size=8, shuffle=True, generator=generator))


def _not_shuffled() -> Any:
    return ex.setup(data=DataLoader(_sorted_data(), batch_size=8))


def _fixed_order_sampler() -> Any:
    # A user sampler that always yields the same permutation: shuffled once, never again.
    order = torch.randperm(48, generator=torch.Generator().manual_seed(1)).tolist()
    return ex.setup(data=DataLoader(_sorted_data(), batch_size=8, sampler=order))


class TrainLoaderNotShuffled(Check):
    """Fail when two passes over the training loader yield their first batches in the same order.

    ## What it measures
    Iterates the training loader twice, 4 batches each, and compares the order of the samples (by
    content hash) in the two passes.

    ## Why it matters
    Without shuffling every epoch presents the same sequence; with sorted data (by class, by length)
    each batch is one-sided and the model chases the most recent class. Shuffled loaders give
    better, more stable training.

    ## Thresholds
    Fails when both passes yield the same order: a fixed order changes what is learned, so it is
    not only a warning. Skipped below 6 distinct samples, where a shuffled order repeats by chance.
    Fixed; where the order is deliberate (a stream for a stateful RNN) turn the check off with
    `--train-sanity-ignore TRN401` (or `ignore` in `[tool.traincheck.sanity]`).

    ## Known problems
    Data that is shuffled upstream (an `IterableDataset` reading pre-shuffled shards) but yields a
    fixed order to the loader is flagged: ignore the check there.

    ## Example
    ```python
    Training(..., data=DataLoader(train_set, batch_size=32))   # shuffle=False
    ```
    """

    CODE = "TRN401"
    # A fixed order changes what is learned (class-sorted data gives single-class batches, and every
    # epoch repeats the same gradient sequence), so it fails by default; a deliberate order (a stream
    # for a stateful RNN) is turned off with `ignore = ["TRN401"]`.
    PASSING = (_shuffled, _seeded_shuffle)
    FAILING = (_not_shuffled, _fixed_order_sampler)

    def run(self, h: Harness) -> CheckResult:
        data = h.training.data
        reason = self._unjudgeable(data)
        if reason is not None:
            return self.skipped(reason)
        # Two passes read back to back here: a pass another check read earlier may have started from the
        # same random state as a fresh one (every check is seeded alike). The first is kept for the others.
        first = sample(h, "data", max_batches=BATCHES, inputs=False, hashes=True, fresh=True)
        second = _data.draw(data, "data", max_batches=BATCHES, inputs=False, hashes=True, training=h.training)
        a, b = first.hashes, second.hashes
        sampler = _data.sampler_name(data)
        facts = dict(samples_compared=len(a), batches=first.batches, sampler=sampler or type(data).__name__)
        if len(set(a)) < MIN_DISTINCT:
            return self._by_sampler(data, len(set(a)), facts)
        same = sum(p == q for p, q in zip(a, b))
        if a == b:
            return self._warn(first, f"the same {same}/{len(a)} samples", facts)
        if self._same_labels(first, second):
            return self._warn(first, f"inputs that differ (random augmentation?) but the same {len(a)} labels", facts)
        return self.passed(f"two passes over the training data start in different orders "
                           f"({len(a) - same}/{len(a)} of the first samples moved)", moved=len(a) - same, **facts)

    @staticmethod
    def _unjudgeable(data: Any) -> Optional[str]:
        if isinstance(data, (list, tuple)):
            return ("`data` is a fixed list of batches, which cannot reshuffle by construction; declare the "
                    "training DataLoader itself to check its shuffling")
        if _data.iterable_dataset(data):
            return ("`data` reads an IterableDataset, which has no sampler to shuffle: shuffle inside the "
                    "dataset (or with a shuffle buffer); not checked")
        return _data.one_shot_reason(data)

    @staticmethod
    def _same_labels(first: _data.Draw, second: _data.Draw) -> bool:
        # Random augmentation changes inputs every pass; varied labels in the same order still give it away.
        ya, yb = first.target_values(), second.target_values()
        return ya.shape == yb.shape and bool(torch.equal(ya, yb)) and len(torch.unique(ya)) > 1 and len(ya) >= 32

    def _by_sampler(self, data: Any, distinct: int, facts: dict[str, Any]) -> CheckResult:
        if isinstance(getattr(data, "sampler", None), SequentialSampler):
            return self.failed(f"the training DataLoader uses a SequentialSampler (only {distinct} distinct "
                               "samples to compare): every epoch yields the samples in index order; "
                               "pass `shuffle=True`", distinct_samples=distinct, **facts)
        return self.skipped(f"only {distinct} distinct samples in the first {BATCHES} batches: "
                            "too few to tell a fixed order from a shuffled one")

    def _warn(self, first: _data.Draw, what: str, facts: dict[str, Any]) -> CheckResult:
        single = sum(len(torch.unique(y)) == 1 for y in first.targets if len(y) > 1)
        note = f"; {single}/{len(first.targets)} of those batches hold a single label" if single else ""
        sampler = f" (sampler: {facts['sampler']})" if facts["sampler"] else ""
        return self.failed(
            f"two passes (epochs) over the training data yield {what} in the same order in their first "
            f"{facts['batches']} batches{sampler}{note}: every epoch repeats one order; pass `shuffle=True` "
            "(or a random sampler) to the training DataLoader (if the order is deliberate, e.g. a stream for a "
            "stateful RNN, ignore TRN401)", single_label_batches=single, **facts)

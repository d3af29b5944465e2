"""The pass the data checks share: every answer equals a fresh `data.draw`, and the data is read once."""

from __future__ import annotations

from typing import Any, Optional

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.core import Harness, UserCodeError
from pytest_traincheck.harness.datapass import sample
from pytest_traincheck.harness.runner import prepare, run_check

DATA_CODES = ("TRN401", "TRN402", "TRN406", "TRN407", "TRN408")


class Counting(Dataset):
    """A dataset that counts its reads and can fail at one index."""

    def __init__(self, n: int = 300, fail_at: Optional[int] = None, width: int = ex.FEATURES, seed: int = 0) -> None:
        self.x, self.y = ex.blobs(n, features=width, seed=seed)
        self.reads, self.fail_at = 0, fail_at

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        if i == self.fail_at:
            raise ValueError(f"corrupt sample {i}")
        self.reads += 1
        return self.x[i], self.y[i]


def _harness(data: Any, **overrides: Any) -> Harness:
    training = ex.setup(data=data, **overrides)
    return Harness(prepare(training), seed=0, device="cpu")


def _same(a: _data.Draw, b: _data.Draw) -> None:
    assert (a.samples, a.batches, a.exhausted, a.hashes) == (b.samples, b.batches, b.exhausted, b.hashes)
    for got, want in ((a.inputs, b.inputs), (a.targets, b.targets)):
        assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))


REQUESTS = [  # (max_samples, max_batches, inputs, targets, hashes): what the data checks ask, and more
    (_data.MAX_SAMPLES, 4, False, True, True),  # TRN401
    (512, 4, True, True, False),  # TRN402
    (_data.MAX_SAMPLES, None, False, False, True),  # TRN406
    (_data.MAX_SAMPLES, None, False, True, False),  # TRN407, TRN408
    (100, None, False, True, False),  # a smaller cap (`options={"TRN407": {"max_samples": 100}}`)
    (70, 3, True, True, True),
    (5000, None, False, True, True),  # beyond the record: read again, further
    (512, 6, True, True, False),  # inputs beyond the head: a fresh draw of its own
]


@pytest.mark.parametrize("batch_size", [1, 32, 64, 500])
def test_every_answer_equals_a_fresh_draw_in_any_order(batch_size: int) -> None:
    data = DataLoader(Counting(), batch_size=batch_size)  # in index order: every pass is the same
    h = _harness(data)
    for order in (REQUESTS, REQUESTS[::-1]):
        h.data.passes.clear()
        for n, batches, inputs, targets, hashes in order:
            got = sample(h, "data", n, batches, inputs=inputs, targets=targets, hashes=hashes)
            want = _data.draw(data, "data", n, batches, inputs=inputs, targets=targets, hashes=hashes,
                              training=h.training)
            _same(got, want)


def test_the_byte_limit_stops_a_replay_where_it_stops_a_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_data, "MAX_BYTES", 1000)  # 40 float targets... a few batches of inputs
    data = DataLoader(Counting(width=20), batch_size=8)
    h = _harness(data)
    for n, batches, inputs, targets, hashes in REQUESTS:
        got = sample(h, "data", n, batches, inputs=inputs, targets=targets, hashes=hashes)
        _same(got, _data.draw(data, "data", n, batches, inputs=inputs, targets=targets, hashes=hashes,
                              training=h.training))


def test_the_data_checks_read_the_training_data_once_after_trn401() -> None:
    dataset = Counting(3000)
    test_loader = DataLoader(Counting(300, seed=1), batch_size=64)
    training = ex.setup(data=DataLoader(dataset, batch_size=64, shuffle=True), eval_data=test_loader)
    data = prepare(training)
    before = dataset.reads
    results = {code: run_check(code, data) for code in DATA_CODES}
    assert all(r.verdict is Verdict.PASS for r in results.values()), [r.describe() for r in results.values()]
    # TRN401's two passes of 4 batches, then one pass of 2,048 for TRN406, TRN407 and TRN408 together.
    assert dataset.reads - before == 2 * 4 * 64 + _data.MAX_SAMPLES
    assert data.passes["data"].passes == 2 and data.passes["eval_data"].passes == 1


def test_a_dataset_that_fails_midway_fails_every_request_that_reaches_it() -> None:
    data = DataLoader(Counting(300, fail_at=150), batch_size=32)
    h = _harness(data)
    assert sample(h, "data", 100, None).samples == 100  # stops before the bad sample: no error
    for _ in range(2):
        with pytest.raises(UserCodeError, match="iterating `data`"):
            sample(h, "data", 1000, None, inputs=False)
    assert sample(h, "data", 64, None).samples == 64


def test_missing_targets_fail_only_requests_for_targets() -> None:
    x, _ = ex.blobs(96)
    data = DataLoader(TensorDataset(x), batch_size=32)  # inputs only
    h = Harness(prepare(ex.setup(data=[ex.blobs()])), seed=0, device="cpu")
    h.data.training.data = data
    hashed = sample(h, "data", 96, None, inputs=False, targets=False, hashes=True)
    assert hashed.samples == 96 and len(hashed.hashes) == 96
    with pytest.raises(tb.MissingField):
        sample(h, "data", 96, None, inputs=False)
    with pytest.raises(tb.MissingField):
        _data.draw(data, "data", 96, inputs=False, training=h.training)


def test_trn401_still_passes_a_shuffled_loader_read_first_by_another_check() -> None:
    # No generator: each pass shuffles from the global random state, which every check seeds alike, so the
    # pass TRN407 read equals the first pass TRN401 would read; TRN401 must compare two passes of its own.
    x, y = ex.blobs(200)
    order = torch.argsort(y, stable=True)
    training = ex.setup(data=DataLoader(TensorDataset(x[order], y[order]), batch_size=8, shuffle=True))
    data = prepare(training)
    assert run_check("TRN407", data).verdict is Verdict.PASS
    result = run_check("TRN401", data)
    assert result.verdict is Verdict.PASS, result.describe()

"""`sample`: one recorded pass over a setup's loader, shared by every data check (TRN401/402/406/407/408).

Each data check used to read its own fresh pass through the user's dataset and transforms
(up to 2,048 samples each, the dominant cost of the suite on a small model). Now the first
check that needs a split records one pass, keeping per batch what any data check reads of
it: the sample count, the targets, the per-sample hashes and, for the first `HEAD_BATCHES`
batches, the inputs. Every later request is answered from that record by replaying
`data.draw`'s own loop over it (its sample, batch and byte limits), so a check sees exactly
what a fresh `draw` would have returned had the loader yielded that pass. A request the
record cannot answer (it needs more batches, or a field that was not kept) records a new
fresh pass far enough for every request seen so far; a request for inputs beyond the head
is drawn fresh and not recorded. The iterator is dropped after each recording, as `draw`
does, so DataLoader workers never outlive a check and a persistent-worker loader is never
iterated from two places at once. A record lives as long as the prepared setup (the
session): what it keeps is bounded like a draw (`data.MAX_BYTES` of targets, and of the
training inputs of the head), plus 16 bytes of hash per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness.core import UserCodeError
from pytest_traincheck.harness.spec import SetupError

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.core import Harness

__all__ = ["HEAD_BATCHES", "HEAD_SAMPLES", "Pass", "sample"]

HEAD_BATCHES, HEAD_SAMPLES = 4, 512  # the head of a pass whose inputs are kept (TRN401 and TRN402 read it)


@dataclass
class _Batch:
    """One batch of a recorded pass: its size and what was kept of it (None: not kept)."""

    samples: int
    hashes: Optional[list[bytes]]
    inputs: Optional[torch.Tensor]
    targets: Optional[torch.Tensor]
    missing: Optional[tb.MissingField] = None  # the batch has no usable targets: a targets request raises this


@dataclass
class _Request:
    max_samples: int
    max_batches: Optional[int]
    hashes: bool


@dataclass
class Pass:
    """The first batches of one fresh pass over ``data``, with what every data check reads of them."""

    data: Any
    where: str
    training: Any
    batches: list[_Batch] = field(default_factory=list)
    exhausted: bool = False
    error: Optional[BaseException] = None  # what stopped the pass (raised to requests that reach it)
    hashes: bool = False  # per-sample hashes kept for every batch
    requests: list[_Request] = field(default_factory=list)
    passes: int = 0  # fresh passes recorded so far (a test reads it)

    def draw(self, max_samples: int, max_batches: Optional[int], *, inputs: bool, targets: bool,
             hashes: bool, fresh: bool = False) -> _data.Draw:
        """Return what `data.draw` with these arguments returns, from the record when it can answer.

        ``fresh`` records a new pass first (as far as the old one reached): the answer comes from a
        pass read now, in this check, not from one another check read earlier.
        """
        found = None if fresh else self._replay(max_samples, max_batches, inputs, targets, hashes)
        if found is not None:
            return found
        request = _Request(max_samples, max_batches, hashes)
        self.requests.append(request)
        self._record(self.hashes or hashes)
        found = self._replay(max_samples, max_batches, inputs, targets, hashes)
        if found is not None:
            return found
        # Inputs beyond the head (no check asks for them today): a fresh pass of their own.
        return _data.draw(self.data, self.where, max_samples, max_batches, inputs=inputs, targets=targets,
                          hashes=hashes, training=self.training)

    def _replay(self, max_samples: int, max_batches: Optional[int], inputs: bool, targets: bool,
                hashes: bool) -> Optional[_data.Draw]:
        """Run `data.draw`'s loop over the recorded batches; None when the record does not reach or lacks a field."""
        if not self.passes:
            return None
        out = _data.Draw()
        kept = 0
        for i in range(len(self.batches) + 1):
            if not (out.samples < max_samples and (max_batches is None or out.batches < max_batches)
                    and kept < _data.MAX_BYTES):
                return out
            if i == len(self.batches):
                if self.error is not None:
                    raise self.error
                if self.exhausted:
                    out.exhausted = True
                    return out
                return None
            b = self.batches[i]
            if targets and b.missing is not None:
                raise b.missing
            room = max_samples - out.samples
            wanted_hashes = min(b.samples, room)
            if (hashes and (b.hashes is None or len(b.hashes) < wanted_hashes)) or (inputs and b.inputs is None) \
                    or (targets and b.targets is None):
                return None
            out.samples, out.batches = out.samples + min(b.samples, room), out.batches + 1
            if hashes and b.hashes is not None:
                out.hashes.extend(b.hashes[:room])
            for wanted, t, bucket in ((inputs, b.inputs, out.inputs), (targets, b.targets, out.targets)):
                if wanted and t is not None:
                    t = t[:room]
                    bucket.append(t)
                    kept += t.numel() * t.element_size()
        return out  # pragma: no cover - the loop always returns

    def _satisfied(self, samples: int, batches: int) -> bool:
        return all(samples >= r.max_samples or (r.max_batches is not None and batches >= r.max_batches)
                   for r in self.requests)

    def _record(self, hashes: bool) -> None:
        """Read a fresh pass far enough for every request so far, keeping what each of them reads."""
        self.batches, self.exhausted, self.error, self.hashes = [], False, None, hashes
        self.passes += 1
        samples = targets_kept = both_kept = 0
        want = max(r.max_samples for r in self.requests)
        try:
            iterator = iter(self.data)
            while not self._satisfied(samples, len(self.batches)):
                try:
                    batch = next(iterator)
                except StopIteration:
                    self.exhausted = True
                    break
                b = self._keep(batch, len(self.batches), samples, want, targets_kept, both_kept)
                self.batches.append(b)
                samples += b.samples
                size = b.targets.numel() * b.targets.element_size() if b.targets is not None else 0
                targets_kept += size
                both_kept += size + (b.inputs.numel() * b.inputs.element_size() if b.inputs is not None else 0)
        except (SetupError, UserCodeError, tb.MissingField) as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - the user's dataset or transforms failed
            self.error = UserCodeError(f"iterating `{self.where}`", exc)
            self.error.__cause__ = exc
        finally:
            iterator = None  # workers shut down here, as after `data.draw`

    def _keep(self, batch: Any, index: int, before: int, want: int, targets_kept: int, both_kept: int) -> _Batch:
        """Return what the data checks read of one batch (the arguments say where in the pass it lies)."""
        part, x, _ = _data.pair(batch, self.where, self.training, targets=False)  # no inputs: every request fails
        room = max(want - before, 0)
        hashes = None
        if self.hashes or index < HEAD_BATCHES:
            per_sample = [t[:room].detach().cpu() for t in tb.leaves(part) if t.ndim >= 1 and len(t) == len(x)]
            hashes = _data.sample_hashes(per_sample)
        y: Optional[torch.Tensor] = None
        missing = None
        try:
            y = _data.pair(batch, self.where, self.training)[2]
        except tb.MissingField as exc:
            missing = exc
        if y is not None and (not y.ndim or targets_kept >= _data.MAX_BYTES):
            y = None  # a 0-d target, or beyond what a targets request keeps: a fresh draw answers that
        elif y is not None:
            y = y.detach().cpu()
        # Only TRN402 reads inputs, and only of the training data: evaluation inputs are never kept.
        keep_x = (self.where == "data" and index < HEAD_BATCHES and before < HEAD_SAMPLES
                  and both_kept < _data.MAX_BYTES and y is not None)
        return _Batch(len(x), hashes, x.detach().cpu() if keep_x else None, y, missing)


def sample(h: Harness, where: str, max_samples: int = _data.MAX_SAMPLES, max_batches: Optional[int] = None, *,
           inputs: bool = True, targets: bool = True, hashes: bool = False, fresh: bool = False) -> _data.Draw:
    """Return `data.draw` of the setup's ``where`` ("data"/"eval_data"), from the pass the data checks share.

    ``fresh``: read the pass now (see `Pass.draw`), for a check that compares it with another fresh pass.
    """
    data = h.training.data if where == "data" else h.training.eval_data
    passes = h.data.passes
    shared = passes.get(where)
    if shared is None or shared.data is not data:
        shared = passes[where] = Pass(data, where, h.training)
    return shared.draw(max_samples, max_batches, inputs=inputs, targets=targets, hashes=hashes, fresh=fresh)

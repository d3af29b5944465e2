"""TRN408: labels outside [0, C), fractional class labels, or binary targets outside [0, 1] (CHECKS.md D16)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import data as _data
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness, UserCodeError
from pytest_traincheck.harness.datapass import sample

DEFAULT_IGNORE_INDEX = -100


@dataclass
class Probe:
    """What one run of the step told: the loss kind, the class count, the labels the loss got."""

    kind: Optional[str]
    classes: Optional[int]
    loss_target: Optional[torch.Tensor]
    error: Optional[UserCodeError]


def _labels(offset: int = 0, dtype: torch.dtype = torch.long, n: int = 48) -> TensorDataset:
    x, y = ex.blobs(n)
    return TensorDataset(x, (y + offset).to(dtype))


def _loader(**kw: Any) -> DataLoader:
    return DataLoader(_labels(**kw), batch_size=16, shuffle=True)


def _one_bad_label() -> Any:
    data = _labels()
    data.tensors[1][37] = 7  # one stray label deep in the dataset, not in the first batch
    return ex.setup(data=DataLoader(data, batch_size=16))


def _shift_step(model: Any, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    x, y = batch
    return ex.good_step(model, (x, y - 1), optimizer, loss_fn)  # 1-based labels mapped to 0-based


def _pm_one_bce() -> Any:
    x, y = ex.binary_blobs()
    return ex.setup(model=lambda: ex.MLP(out=1), loss_fn=nn.BCEWithLogitsLoss(), data=[(x, y * 2 - 1)])


def _ignored() -> Any:
    data = _labels()
    data.tensors[1][::5] = DEFAULT_IGNORE_INDEX  # padding / unlabeled samples, skipped by the loss
    return ex.setup(data=DataLoader(data, batch_size=16, shuffle=True))


class LabelsOutOfRange(Check):
    """Fail on labels outside [0, C) (ignore_index excepted), fractional labels, or BCE targets outside [0, 1].

    ## What it measures
    Scans up to 2048 labels of the training and evaluation data for values outside [0, C),
    fractional class labels, and binary targets outside [0, 1]. C is the width of the input the step
    gives `cross_entropy`/`nll_loss` (else `num_classes`, else the model's output width); the loss's
    `ignore_index` (-100 by default) is allowed.

    ## Why it matters
    An out-of-range label crashes training late (after an epoch reaches it) or, on CUDA, as an
    opaque device-side assert; 1-based labels waste a class and shift every other.

    ## Thresholds
    Any bad label fails. Fixed; turn the check off with `--train-sanity-ignore TRN408` (or `ignore`
    in `[tool.traincheck.sanity]`).

    ## Known problems
    A step that maps labels (`y - 1`) is judged on the labels its loss received, not on the raw
    data. Regression targets are not judged.

    ## Example
    ```python
    labels = torch.tensor([1, 2, ..., 10])   # 1-based labels for a 10-class output
    ```
    """

    CODE = "TRN408"
    PASSING = (lambda: ex.setup(data=_loader()), _ignored,
               lambda: ex.setup(data=_loader(offset=1), step=_shift_step),
               lambda: ex.setup(model=lambda: ex.MLP(out=1), loss_fn=nn.BCEWithLogitsLoss(),
                                data=[ex.binary_blobs()]))
    FAILING = (lambda: ex.setup(data=_loader(offset=1)), _one_bad_label,
               lambda: ex.setup(data=_loader(dtype=torch.float32)), _pm_one_bce,
               lambda: ex.setup(data=_loader(), eval_data=DataLoader(_labels(offset=3), batch_size=16)))

    def run(self, h: Harness) -> CheckResult:
        probe = self._probe(h)
        kind = probe.kind or _data.loss_kind(h.training)
        if kind is None and _data.classification(h.training, h.target_tensor()) == "classification":
            kind = "cross_entropy"
        if kind not in _data.CLASS_INDEX_LOSSES + _data.BINARY_LOSSES:
            return self._reraise(probe) or self.skipped("not a classification setup: no class labels to check")
        splits = self._splits(h, probe)
        findings = [self._judge(kind, probe, h, where, y) for where, y in splits]
        problems = [f for f in findings if f is not None]
        if problems:
            where, message, facts = problems[0]
            crash = f" (the training step raised {type(probe.error.original).__name__})" if probe.error else ""
            return self.failed(f"`{where}`{crash}: {message}", split=where, **facts)
        if probe.error is not None:
            raise probe.error
        scanned = ", ".join(f"{len(y)} `{w}`" for w, y in splits)
        return self.passed(f"every label is valid for {kind} ({scanned} labels scanned)", loss=kind,
                           classes=probe.classes)

    @staticmethod
    def _reraise(probe: Probe) -> None:
        if probe.error is not None:
            raise probe.error

    def _probe(self, h: Harness) -> Probe:
        """Read the shared run's first step: the loss kind, its class count and the labels it was given."""
        rec = h.record(raise_error=False)
        error = None
        if rec.error is not None and not rec.losses:
            if not isinstance(rec.error, UserCodeError):
                raise rec.error
            error = rec.error  # a bad label may be what crashed the step: explain that first
        calls = [c for c in rec.loss_calls if c.phase == "step" and c.step == 0]
        classes = self._classes(h, calls, h.training.num_classes)
        call = calls[0] if calls else None
        target = call.target.cpu() if call is not None and call.target is not None else None
        return Probe(call.kind if call else None, classes, target, error)

    @staticmethod
    def _classes(h: Harness, calls: list[Any], declared: Optional[int]) -> Optional[int]:
        # The width cross_entropy really gets decides which labels crash; then the declaration.
        for call in calls:
            if call.kind in _data.CLASS_INDEX_LOSSES and call.input is not None and call.input.ndim >= 2:
                return int(call.input.shape[1])
        if declared is not None:
            return declared
        try:
            with h.session() as s:
                out = tb.logits_of(s.predict())
        except UserCodeError:
            return None
        return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim >= 2 else None

    def _splits(self, h: Harness, probe: Probe) -> list[tuple[str, torch.Tensor]]:
        """Return the labels to judge per split: scanned data, or what the loss received."""
        raw = h.target_tensor()
        unchanged = probe.loss_target is None or (probe.loss_target.numel() == raw.numel() and torch.equal(
            probe.loss_target.reshape(-1).double(), raw.reshape(-1).double()))
        if not unchanged:
            return [("step -> loss target", probe.loss_target)]
        splits = []
        for where, data in (("data", h.training.data), ("eval_data", h.training.eval_data)):
            if data is None:
                continue
            if _data.one_shot_reason(data) is not None:
                labels = raw if where == "data" else h.target_tensor(h.eval_batch())
            else:
                labels = sample(h, where, _data.max_samples(h.training, self.CODE), inputs=False).target_values()
            splits.append((where, labels))
        return splits

    def _judge(self, kind: str, probe: Probe, h: Harness, where: str,
               y: torch.Tensor) -> Optional[tuple[str, str, dict[str, Any]]]:
        if kind in _data.BINARY_LOSSES:
            bad = (y < 0) | (y > 1)
            return self._report(where, y, bad, f"binary targets must lie in [0, 1] for {kind}",
                                "map them to 0/1 (e.g. `(y + 1) / 2` for -1/+1 labels)")
        if y.is_floating_point() and y.ndim >= 2 and probe.classes not in (None, 1) and y.shape[1] == probe.classes:
            return None  # class probabilities (soft labels, mixup) of shape (N, C): not class indices
        if y.is_floating_point():
            fractional = y != y.round()
            if bool(fractional.any()):
                return self._report(where, y, fractional, "class labels must be whole numbers",
                                    "map them to integers 0..C-1 of dtype torch.long")
            if probe.error is not None or (probe.loss_target is not None and probe.loss_target.is_floating_point()):
                return (where, f"class labels are {y.dtype}, but {kind} needs class indices of dtype torch.long",
                        dict(dtype=str(y.dtype)))
        ignore = getattr(h.training.loss_fn, "ignore_index", DEFAULT_IGNORE_INDEX)
        classes = probe.classes
        high = classes if classes is not None else None
        bad = (y < 0) if high is None else (y < 0) | (y >= high)
        bad &= y != ignore
        span = f"[0, {high})" if high is not None else "[0, C)"
        return self._report(where, y, bad, f"class labels must lie in {span} for {kind} (ignore_index {ignore} "
                            "allowed)", f"map labels to 0..{(high or 1) - 1} (e.g. `y - 1` for 1-based labels) "
                            "or widen the output layer to the real number of classes")

    @staticmethod
    def _report(where: str, y: torch.Tensor, bad: torch.Tensor, rule: str,
                fix: str) -> Optional[tuple[str, str, dict[str, Any]]]:
        count = int(bad.sum())
        if count == 0:
            return None
        values = Counter(y[bad].reshape(-1).tolist()).most_common(5)
        shown = ", ".join(f"{v:g} (x{n})" for v, n in values)
        message = (f"{count}/{y.numel()} labels break the rule \"{rule}\"; offending values: {shown} "
                   f"(label range seen {float(y.min()):g}..{float(y.max()):g}); {fix}")
        return where, message, dict(bad_labels=count, labels=y.numel(), offending=shown,
                                    label_min=float(y.min()), label_max=float(y.max()))

"""Shared helpers of the data checks (TRN401/402/406/407/408): bounded draws, sample hashes, loss kinds."""

from __future__ import annotations

import collections.abc
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness.core import UserCodeError
from pytest_traincheck.harness.spec import SetupError, Training

MAX_SAMPLES = 2048  # a sample this size estimates fractions to about +-2%; never a whole big dataset
MAX_BYTES = 256 * 2**20  # stop drawing once the kept tensors reach this (large images, dense masks)
CLASS_INDEX_LOSSES = ("cross_entropy", "nll_loss")
BINARY_LOSSES = ("binary_cross_entropy", "binary_cross_entropy_with_logits")

_LOSS_MODULES: tuple[tuple[type, str], ...] = (
    (nn.CrossEntropyLoss, "cross_entropy"),
    (nn.NLLLoss, "nll_loss"),
    (nn.BCEWithLogitsLoss, "binary_cross_entropy_with_logits"),
    (nn.BCELoss, "binary_cross_entropy"),
    (nn.MSELoss, "regression"),
    (nn.L1Loss, "regression"),
    (nn.SmoothL1Loss, "regression"),
    (nn.HuberLoss, "regression"),
)
_LOSS_FUNCTIONS: dict[Any, str] = {
    F.cross_entropy: "cross_entropy",
    F.nll_loss: "nll_loss",
    F.binary_cross_entropy_with_logits: "binary_cross_entropy_with_logits",
    F.binary_cross_entropy: "binary_cross_entropy",
    F.mse_loss: "regression",
    F.l1_loss: "regression",
}


@dataclass
class Draw:
    """The first samples of a loader: what was kept of each batch, and whether it ran out."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)  # one per input sample, when asked for
    samples: int = 0
    batches: int = 0
    exhausted: bool = False

    def all_targets(self) -> Optional[torch.Tensor]:
        """Return the drawn targets concatenated along the batch dimension (None if their shapes vary)."""
        if len({t.shape[1:] for t in self.targets}) != 1:
            return None
        return torch.cat(self.targets)

    def target_values(self) -> torch.Tensor:
        """Return every drawn target value, flattened (variable-length targets too)."""
        whole = self.all_targets()
        return whole if whole is not None else torch.cat([t.reshape(-1) for t in self.targets])


def max_samples(training: Training, code: str) -> int:
    """Return the sample cap for ``code``: ``options={code: {"max_samples": n}}`` or `MAX_SAMPLES`."""
    return int(training.options.get(code, {}).get("max_samples", MAX_SAMPLES))


def one_shot_reason(data: Any) -> Optional[str]:
    """Return why ``data`` cannot be iterated again without consuming it, or None."""
    if isinstance(data, collections.abc.Iterator):
        return (f"`data` is a one-shot {type(data).__name__}: reading more of it would consume your batches; "
                "declare a DataLoader or a list to enable this check")
    return None


def iterable_dataset(data: Any) -> bool:
    """True for a DataLoader over an IterableDataset (no sampler, so no shuffle option)."""
    return isinstance(getattr(data, "dataset", None), torch.utils.data.IterableDataset)


def sampler_name(data: Any) -> str:
    """Return the class name of the DataLoader's sampler, or '' for other iterables."""
    sampler = getattr(data, "sampler", None)
    batch_sampler = getattr(data, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    if batch_sampler is not None and inner is not sampler and inner is not None:
        sampler = inner  # a BatchSampler given by the user wraps its own sampler
    return type(sampler).__name__ if sampler is not None else ""


def sequential(data: Any) -> bool:
    """True when the DataLoader reads its dataset in index order."""
    return sampler_name(data) == "SequentialSampler"


def draw(data: Any, where: str, max_samples: int = MAX_SAMPLES, max_batches: Optional[int] = None, *,
         inputs: bool = True, targets: bool = True, hashes: bool = False,
         training: Optional[Training] = None) -> Draw:
    """Read at most ``max_samples`` samples (``max_batches`` batches, `MAX_BYTES` kept) of a fresh pass."""
    out = Draw()
    kept = 0
    try:
        iterator = iter(data)
        while out.samples < max_samples and (max_batches is None or out.batches < max_batches) and kept < MAX_BYTES:
            try:
                batch = next(iterator)
            except StopIteration:
                out.exhausted = True
                break
            part, x, y = pair(batch, where, training, targets=targets)
            room = max_samples - out.samples
            out.samples, out.batches = out.samples + len(x[:room]), out.batches + 1
            # Keep only what the check needs: big images or dense masks must not pile up.
            if hashes:
                per_sample = [t[:room].detach().cpu() for t in tb.leaves(part) if t.ndim >= 1 and len(t) == len(x)]
                out.hashes.extend(sample_hashes(per_sample))
            for wanted, t, bucket in ((inputs, x, out.inputs), (targets, y, out.targets)):
                if wanted and t is not None:
                    t = t[:room].detach().cpu()
                    bucket.append(t)
                    kept += t.numel() * t.element_size()
    except (SetupError, UserCodeError, tb.MissingField):
        raise
    except Exception as exc:  # noqa: BLE001 - the user's dataset or transforms failed
        raise UserCodeError(f"iterating `{where}`", exc) from exc
    finally:
        # Drop the iterator now so DataLoader workers shut down here, not at garbage collection.
        iterator = None
    return out


def pair(batch: Any, where: str, training: Optional[Training] = None,
         targets: bool = True) -> tuple[Any, torch.Tensor, Optional[torch.Tensor]]:
    """Return the inputs part, the inputs tensor and (if wanted) the targets tensor of one batch.

    Raises `MissingField` (the check is skipped) when the setup's batch has no such part.
    """
    from pytest_traincheck.harness.core import find, tensor_part

    spec_in = training.inputs if training is not None else None
    spec_out = training.targets if training is not None else None
    part = find(batch, spec_in, "inputs")
    x = tensor_part(part, "inputs")
    y = tensor_part(find(batch, spec_out, "targets"), "targets") if targets else None
    if y is not None and y.ndim and len(y) != len(x):
        raise tb.MissingField(f"`{where}` yields inputs of {len(x)} samples and targets of {len(y)}: declare "
                              "`Training(inputs=..., targets=...)` to point at per-sample tensors")
    return part, x, y


def sample_hashes(tensors: Any) -> list[bytes]:
    """Return one digest per sample (first dimension) over ``tensors``, covering their dtypes, shapes and bytes."""
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
    rows: list[list[bytes]] = []
    for t in tensors:
        flat = t.detach().cpu().contiguous().reshape(len(t), -1)
        raw = flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat
        header = f"{t.dtype}{tuple(t.shape[1:])}".encode()
        rows.append([header + row.numpy().tobytes() for row in raw])
    return [hashlib.blake2b(b"".join(parts), digest_size=16).digest() for parts in zip(*rows)]


def loss_kind(training: Training) -> Optional[str]:
    """Name the declared loss: a class-index loss, a binary loss, 'regression', or None if unknown."""
    loss_fn = training.loss_fn
    for cls, kind in _LOSS_MODULES:
        if isinstance(loss_fn, cls):
            return kind
    try:
        return _LOSS_FUNCTIONS.get(loss_fn)
    except TypeError:  # an unhashable callable
        return None


def classification(training: Training, targets: torch.Tensor) -> Optional[str]:
    """Return 'classification' or 'binary' when the setup predicts labels, else None."""
    if training.task in ("classification", "binary"):
        return training.task
    if training.task == "regression":
        return None
    kind = loss_kind(training)
    if kind in CLASS_INDEX_LOSSES:
        return "classification"
    if kind in BINARY_LOSSES:
        return "binary"
    if kind is None and not targets.is_floating_point() and not targets.is_complex() and targets.dtype != torch.bool:
        return "classification"  # integer targets with an unknown loss: class labels
    return None


def per_sample_labels(targets: torch.Tensor) -> Optional[torch.Tensor]:
    """Return one label per sample (shape (N,)), or None for dense or multi-label targets."""
    if targets.ndim == 1:
        return targets
    if targets.ndim == 2 and targets.shape[1] == 1:
        return targets[:, 0]
    return None


def class_weights(counts: dict[int, int]) -> dict[int, float]:
    """Return inverse-frequency class weights normalized to mean 1 over the classes present."""
    inverse = {c: 1.0 / n for c, n in counts.items() if n > 0}
    mean = sum(inverse.values()) / max(len(inverse), 1)
    return {c: w / mean for c, w in inverse.items()}


def first_weight_layer_input(model: nn.Module, x: torch.Tensor, forward: Callable[[torch.Tensor], Any]) -> Any:
    """Return the input the first Linear/Conv layer receives when ``forward(x)`` runs, or None."""
    layers = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.RNNBase)
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any) -> None:
        if not seen and args and isinstance(args[0], torch.Tensor):
            seen.append(args[0].detach())

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, layers)]
    try:
        forward(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen[0] if seen else None

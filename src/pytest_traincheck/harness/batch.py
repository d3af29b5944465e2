"""Batches of any shape: find their inputs and targets, copy, cut, move and zero them by structure.

Only the user's step has to understand a batch. The harness keeps the batch as the
loader yields it (a tensor, a tuple or list of any length, a dict or dict subclass
such as a tokenizer's `BatchEncoding`, a namedtuple, a dataclass, nested) and
reaches into it only where a check needs the inputs or the targets, through
``Training(inputs=..., targets=...)`` or the usual names and positions.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
from collections import Counter
from typing import Any, Callable, Optional

import torch

__all__ = ["INPUT_NAMES", "TARGET_NAMES", "MissingField", "Part", "cut", "first_tensor", "leaves", "locate",
           "logits_of", "loss_of", "to_device", "tree_map", "zero_part"]

INPUT_NAMES = ("input_ids", "pixel_values", "x", "inputs", "input", "features", "image", "images")
TARGET_NAMES = ("labels", "label", "y", "targets", "target")


class MissingField(Exception):
    """A check needs the inputs or targets of the batch and cannot find them: it is skipped."""


Part = Any  # a field spec: None (find it), a key, an index, or a callable on the batch


def _children(obj: Any) -> Optional[list[tuple[Any, Any]]]:
    """Return ``(key, child)`` pairs of a container, or None for a leaf."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, (str, bytes)):
        return None
    if isinstance(obj, collections.abc.Mapping):
        return list(obj.items())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    if isinstance(obj, (tuple, list)):
        return list(enumerate(obj))
    return None


def _rebuild(obj: Any, values: dict[Any, Any]) -> Any:
    """Return a container like ``obj`` holding ``values`` (same keys), keeping its type."""
    if isinstance(obj, collections.abc.Mapping):
        if isinstance(obj, collections.abc.MutableMapping):
            try:
                out = copy.copy(obj)  # keeps a BatchEncoding's extra attributes
                for key, value in values.items():
                    out[key] = value
                return out
            except Exception:  # noqa: BLE001 - an exotic mapping: fall back to its constructor or a dict
                pass
        try:
            return type(obj)(values)
        except Exception:  # noqa: BLE001
            return dict(values)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = copy.copy(obj)
        for key, value in values.items():
            object.__setattr__(out, key, value)  # frozen dataclasses too
        return out
    ordered = [values[i] for i in range(len(obj))]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*ordered)
    if isinstance(obj, tuple):
        return tuple(ordered)
    if type(obj) is list:
        return ordered
    try:
        return type(obj)(ordered)
    except Exception:  # noqa: BLE001
        return ordered


def tree_map(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in ``obj``, rebuilding its containers; other leaves are kept."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    kids = _children(obj)
    if kids is None:
        return obj
    return _rebuild(obj, {key: tree_map(fn, child) for key, child in kids})


def leaves(obj: Any) -> list[torch.Tensor]:
    """Return every tensor in ``obj``, depth first."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    out: list[torch.Tensor] = []
    for _, child in _children(obj) or []:
        out.extend(leaves(child))
    return out


def first_tensor(obj: Any, floating: bool = False) -> Optional[torch.Tensor]:
    """Return the first batched tensor of ``obj`` (the first floating one if asked and present)."""
    found = [t for t in leaves(obj) if t.ndim >= 1]
    if floating:
        floats = [t for t in found if t.is_floating_point()]
        found = floats or found
    return found[0] if found else None


def batch_size(batch: Any, hint: Any = None) -> Optional[int]:
    """Return the number of samples: the first dimension of the inputs, else the most common one."""
    first = first_tensor(hint) if hint is not None else None
    if first is not None:
        return int(first.shape[0])
    sizes = Counter(int(t.shape[0]) for t in leaves(batch) if t.ndim >= 1)
    return sizes.most_common(1)[0][0] if sizes else None


def cut(batch: Any, samples: Optional[int], cap: int) -> Any:
    """Return a detached copy of ``batch`` on the CPU, every tensor of ``samples`` rows cut to ``cap``."""
    def one(t: torch.Tensor) -> torch.Tensor:
        if samples is not None and t.ndim >= 1 and t.shape[0] == samples:
            t = t[:cap]
        return t.detach().cpu().clone()
    return tree_map(one, batch)


def to_device(batch: Any, device: torch.device) -> Any:
    """Return a fresh copy of ``batch`` with every tensor on ``device``."""
    return tree_map(lambda t: t.to(device, copy=True), batch)


def _named(batch: Any) -> Optional[dict[str, Any]]:
    """Return the batch's fields by name for mappings, namedtuples and dataclasses, else None."""
    if isinstance(batch, collections.abc.Mapping):
        return {str(k): v for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return dict(zip(batch._fields, batch))
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return None


def _by_name(fields: dict[str, Any], names: tuple[str, ...]) -> Optional[str]:
    lowered = {k.lower(): k for k in fields}
    for name in names:
        if name in fields:
            return name
        if name in lowered:
            return lowered[name]
    return None


def describe(batch: Any) -> str:
    """Say what the batch is, for messages: its type and its keys or length."""
    fields = _named(batch)
    if fields is not None:
        return f"{type(batch).__name__} with fields {', '.join(fields)}"
    if isinstance(batch, (tuple, list)):
        return f"{len(batch)}-element {type(batch).__name__}"
    return type(batch).__name__


def locate(batch: Any, spec: Part, role: str) -> Any:
    """Return the ``role`` part ("inputs" or "targets") of ``batch`` as ``spec`` or the defaults find it.

    Raises `MissingField` naming the `Training` field to declare when it cannot be found.
    """
    hint = (f"declare `Training({role}=...)` with a key, an index or a function of the batch "
            f"(the batch is a {describe(batch)})")
    if callable(spec) and not isinstance(spec, (str, int)):
        return spec(batch)
    if spec is not None:
        fields = _named(batch)
        try:
            if isinstance(spec, str) and fields is not None:
                return fields[spec]
            if isinstance(spec, int) and not isinstance(spec, bool) and isinstance(batch, (tuple, list)):
                return batch[spec]
        except (KeyError, IndexError):
            pass
        raise MissingField(f"`{role}={spec!r}` is not in the batch; {hint}")
    if isinstance(batch, torch.Tensor):
        if role == "inputs":
            return batch
        raise MissingField(f"the batch is a single tensor, so it has no {role}; {hint}")
    fields = _named(batch)
    if fields is not None:
        names = INPUT_NAMES if role == "inputs" else TARGET_NAMES
        key = _by_name(fields, names)
        if key is None and role == "inputs":
            # No usual name: the first tensor that is not a target (a dict with one image field).
            key = next((k for k, v in fields.items() if isinstance(v, torch.Tensor)
                        and _by_name({k: v}, TARGET_NAMES) is None), None)
        if key is None:
            raise MissingField(f"no {role} found under the usual names ({', '.join(names)}); {hint}")
        return fields[key]
    if isinstance(batch, (tuple, list)):
        index = 0 if role == "inputs" else 1
        if len(batch) > index:
            return batch[index]
        raise MissingField(f"the batch has no position {index} for the {role}; {hint}")
    raise MissingField(f"cannot find the {role} of the batch; {hint}")


def zero_part(batch: Any, part: Any, keep: Any = None) -> tuple[Any, int]:
    """Return ``batch`` with the tensors of ``part`` zeroed, and how many were zeroed.

    Every floating tensor of the part is zeroed; a part with none (token ids) has its
    integer tensors set to 0 instead. Tensors that are also in ``keep`` (the targets
    of an autoencoder) are left alone.
    """
    kept = {id(t) for t in leaves(keep)} if keep is not None else set()
    tensors = [t for t in leaves(part) if id(t) not in kept and t.dtype != torch.bool]
    chosen = [t for t in tensors if t.is_floating_point() or t.is_complex()]
    chosen = chosen or tensors
    ids = {id(t) for t in chosen}
    zeroed = tree_map(lambda t: torch.zeros_like(t) if id(t) in ids else t, batch)
    return zeroed, len(ids)


def loss_of(out: Any) -> Optional[Any]:
    """Return the loss a model output or a step's return value carries: a scalar, ``.loss`` or ``["loss"]``."""
    if isinstance(out, torch.Tensor):
        return out if out.numel() == 1 else None
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return out
    value = None
    if isinstance(out, collections.abc.Mapping):
        value = out.get("loss")
    elif not isinstance(out, (tuple, list, str, bytes)):
        value = getattr(out, "loss", None)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def logits_of(out: Any, samples: Optional[int] = None) -> Optional[torch.Tensor]:
    """Return the predictions tensor of a model output: itself, ``.logits``, ``["logits"]`` or the first batched one."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("logits", "prediction", "predictions", "output", "out"):
        value = out.get(name) if isinstance(out, collections.abc.Mapping) else getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    for t in leaves(out):
        if t.ndim >= 1 and (samples is None or t.shape[0] == samples):
            return t
    return None

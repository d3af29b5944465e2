"""Check an image-classification dataset described by CSV files before training on it.

The layout is the seed guide's ``CustomDataset``: a CSV whose rows hold an image
file name (joined to a root folder) and an integer class label. Each row is
checked the way the training loop will meet it: the file must exist and decode
with ``skimage.io.imread``, images should agree in size, channels and dtype, and
the label must be an integer. Across rows and splits the same picture must not
appear twice, least of all in both the training and the test split.

pandas, numpy and scikit-image are optional dependencies (the ``data`` extra);
they are imported by the functions that need them, never at module import.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

# Errors make `traincheck data check` exit 1; warnings only with --strict.
ERROR_KINDS = ("missing", "unreadable", "corrupt", "bad-label", "label-conflict", "split-leak")
WARNING_KINDS = ("inconsistent-size", "inconsistent-channels", "inconsistent-dtype",
                 "duplicate", "imbalance", "missing-class", "empty-split", "root-hint")
DEFAULT_IMBALANCE_THRESHOLD = 3.0
WEIGHTS_FORMULA = ("w_c = (1 / n_c) / mean_j(1 / n_j)  "
                   "(inverse frequency, normalized to mean 1 over the classes present)")
_INTEGER = re.compile(r"[+-]?\d+")


class AnnotationError(ValueError):
    """An annotation CSV that cannot be used at all: missing, unreadable, or lacking a column."""


@dataclass(frozen=True)
class Issue:
    """One problem found in one row (``row`` is the 0-based ``dataset[row]`` index) or one split."""

    kind: str
    split: str
    row: Optional[int]
    path: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object of this issue."""
        return {"kind": self.kind, "split": self.split, "row": self.row, "path": self.path, "message": self.message}


@dataclass
class Split:
    """The rows of one annotation CSV, read as text so that nothing is silently converted."""

    name: str
    csv: Path
    path_column: str
    label_column: str
    paths: list[str]
    labels: list[str]
    header: bool = True


@dataclass
class _Image:
    split: str
    row: int
    path: str
    size: tuple[int, ...]
    channels: int
    dtype: str
    digest: str


@dataclass
class DataReport:
    """Everything `traincheck data check` found, ready to render."""

    root: str
    splits: list[Split]
    files_checked: int = 0
    images_read: int = 0
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    image_format: dict[str, Any] = field(default_factory=dict)
    class_distribution: dict[str, dict[int, int]] = field(default_factory=dict)
    imbalance_ratio: dict[str, Optional[float]] = field(default_factory=dict)
    imbalance_threshold: float = DEFAULT_IMBALANCE_THRESHOLD
    suggested_weights: Optional[list[float]] = None

    @property
    def training_split(self) -> Optional[Split]:
        """Return the first split: the one that class weights and the sampler are computed for."""
        return self.splits[0] if self.splits else None

    def to_json(self) -> dict[str, Any]:
        """Return the documented JSON object (see docs/data-check.md)."""
        return {
            "schema_version": 1,
            "root": self.root,
            "splits": [{"name": s.name, "csv": str(s.csv), "rows": len(s.paths), "path_column": s.path_column,
                        "label_column": s.label_column} for s in self.splits],
            "files_checked": self.files_checked,
            "images_read": self.images_read,
            "errors": [i.to_json() for i in self.errors],
            "warnings": [i.to_json() for i in self.warnings],
            "image_format": self.image_format,
            "class_distribution": {name: {str(c): n for c, n in counts.items()}
                                   for name, counts in self.class_distribution.items()},
            "imbalance_ratio": self.imbalance_ratio,
            "imbalance_threshold": self.imbalance_threshold,
            "suggested_weights": self.suggested_weights,
            "weights_formula": WEIGHTS_FORMULA,
        }


def load_split(csv: Path, path_column: Optional[str] = None, label_column: Optional[str] = None,
               header: bool = True, name: Optional[str] = None) -> Split:
    """Read one annotation CSV; raise AnnotationError when it cannot be used."""
    import pandas as pd

    shown = name or str(csv)
    if not csv.exists():
        raise AnnotationError(f"{shown}: no such file")
    try:
        # dtype=str and no NA parsing: a label "1.0" or an empty cell must stay visible as written.
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True,
                            header=0 if header else None)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnnotationError(f"cannot read {shown}: {first}") from None
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    path_col = _column(shown, columns, path_column, 0, "--path-column")
    label_col = _column(shown, columns, label_column, 1, "--label-column")
    return Split(name=shown, csv=csv, path_column=path_col, label_column=label_col,
                 paths=frame[path_col].tolist(), labels=[v.strip() for v in frame[label_col].tolist()],
                 header=header)


def _column(shown: str, columns: list[str], wanted: Optional[str], default: int, option: str) -> str:
    listed = ", ".join(repr(c) for c in columns)
    if wanted is None:
        if len(columns) <= default:
            raise AnnotationError(f"{shown} has {len(columns)} column(s) ({listed}); "
                                  f"need a file name and a label column (see {option})")
        return columns[default]
    if wanted not in columns:
        raise AnnotationError(f"{shown} has no column {wanted!r} ({option}); its columns are: {listed}")
    return wanted


def check_dataset(splits: Sequence[Split], root: Path, imbalance_threshold: float = DEFAULT_IMBALANCE_THRESHOLD,
                  on_row: Optional[Callable[[int, int], None]] = None) -> DataReport:
    """Check every row of every split under ``root``; call ``on_row(done, total)`` after each row."""
    report = DataReport(root=str(root), splits=list(splits), imbalance_threshold=imbalance_threshold)
    total = sum(len(s.paths) for s in splits)
    images: list[_Image] = []
    done = 0
    for split in splits:
        for row, name in enumerate(split.paths):
            image = _check_file(report, split.name, row, name, root)
            if image is not None:
                images.append(image)
            done += 1
            if on_row is not None:
                on_row(done, total)
    report.files_checked = total
    report.images_read = len(images)
    _root_hint(report, root)
    _check_format(report, images)
    _check_duplicates(report, images)
    _check_labels(report)
    return report


def _check_file(report: DataReport, split: str, row: int, name: str, root: Path) -> Optional[_Image]:
    import numpy as np
    from skimage import io

    if not name.strip():
        report.errors.append(Issue("missing", split, row, name, "empty file name"))
        return None
    path = root / name
    shown = str(path)
    if not path.exists():
        report.errors.append(Issue("missing", split, row, shown, "file does not exist"))
        return None
    if path.is_dir():
        report.errors.append(Issue("unreadable", split, row, shown, "is a folder, not an image file"))
        return None
    if not path.is_file():  # a FIFO or a device: opening it would block forever
        report.errors.append(Issue("unreadable", split, row, shown, "not a regular file (a FIFO or a device?)"))
        return None
    try:
        with warnings.catch_warnings():
            # Decoder chatter (EXIF, ICC profiles) would scatter through the report; failures still raise.
            warnings.simplefilter("ignore")
            pixels = np.asarray(io.imread(str(path)))
    except PermissionError as exc:
        report.errors.append(Issue("unreadable", split, row, shown, f"permission denied ({exc.strerror})"))
        return None
    except Exception as exc:  # noqa: BLE001 - each imageio/PIL backend raises its own types
        report.errors.append(Issue("corrupt", split, row, shown, f"cannot decode: {_first_line(exc)}"))
        return None
    if pixels.ndim < 2 or pixels.size == 0:
        report.errors.append(Issue("corrupt", split, row, shown, f"decoded to an empty array of shape {pixels.shape}"))
        return None
    # Hash decoded pixels, not file bytes: the same picture saved twice (other name, other metadata,
    # PNG vs lossless TIFF) is the same training example. Lossy re-encodings are out of scope.
    digest = hashlib.sha1(f"{pixels.dtype.str}{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    channels = 1 if pixels.ndim == 2 else int(pixels.shape[-1])
    return _Image(split, row, shown, tuple(int(n) for n in pixels.shape[:2]), channels, str(pixels.dtype),
                  digest.hexdigest())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("``", "`")  # imageio quotes paths as `name``: one backtick each side
    first = text.splitlines()[0].rstrip(".") if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _root_hint(report: DataReport, root: Path) -> None:
    missing = sum(1 for e in report.errors if e.kind == "missing")
    if report.files_checked and missing == report.files_checked:
        report.warnings.append(Issue("root-hint", "", None, str(root),
                                     f"none of the {missing} files exists under {root}: is --root right?"))


def _check_format(report: DataReport, images: list[_Image]) -> None:
    for prop, kind, show in (("size", "inconsistent-size", lambda v: "x".join(map(str, v))),
                             ("channels", "inconsistent-channels", str),
                             ("dtype", "inconsistent-dtype", str)):
        counts = Counter(getattr(image, prop) for image in images)
        if not counts:
            report.image_format[prop] = None
            continue
        # most_common breaks ties by first appearance, so the report is stable for a given CSV order.
        majority, count = counts.most_common(1)[0]
        report.image_format[prop] = {"majority": list(majority) if isinstance(majority, tuple) else majority,
                                     "count": count, "values": len(counts)}
        for image in images:
            value = getattr(image, prop)
            if value != majority:
                report.warnings.append(Issue(kind, image.split, image.row, image.path,
                                             f"{prop} {show(value)} differs from the majority {show(majority)} "
                                             f"({count} of {len(images)} images)"))


def _check_duplicates(report: DataReport, images: list[_Image]) -> None:
    groups: dict[str, list[_Image]] = {}
    for image in images:
        groups.setdefault(image.digest, []).append(image)
    labels = {split.name: split.labels for split in report.splits}
    for group in groups.values():
        _check_conflicts(report, group, labels)
        first_in_split: dict[str, _Image] = {}
        for image in group:
            first = first_in_split.setdefault(image.split, image)
            if first is not image:
                report.warnings.append(Issue("duplicate", image.split, image.row, image.path,
                                             f"{_same(first, image)} as row {first.row} ({first.path})"))
        seen = list(first_in_split.values())
        for later in seen[1:]:
            earlier = seen[0]
            where = f"{earlier.split} row {earlier.row} ({earlier.path})"
            report.errors.append(Issue("split-leak", later.split, later.row, later.path,
                                       f"{_same(earlier, later)} as {where}; "
                                       "an example in two splits inflates the evaluation score"))


def _check_conflicts(report: DataReport, group: list[_Image], labels: dict[str, list[str]]) -> None:
    """Report every copy of a picture whose label differs from the first copy's: one picture, two classes."""
    def label(image: _Image) -> str:
        text = labels[image.split][image.row]
        return str(int(text)) if _INTEGER.fullmatch(text) else text

    first = group[0]
    for image in group[1:]:
        if label(image) != label(first):
            where = f"row {first.row}" if first.split == image.split else f"{first.split} row {first.row}"
            report.errors.append(Issue("label-conflict", image.split, image.row, image.path,
                                       f"{_same(first, image)} with label {label(image)} here but label "
                                       f"{label(first)} at {where} ({first.path}): one picture cannot belong "
                                       "to two classes; keep the right label"))


def _same(first: _Image, other: _Image) -> str:
    return "the same file" if first.path == other.path else "same pixels"


def _check_labels(report: DataReport) -> None:
    parsed: dict[str, list[int]] = {}
    root = Path(report.root)
    for split in report.splits:
        values = parsed.setdefault(split.name, [])
        for row, text in enumerate(split.labels):
            if not _INTEGER.fullmatch(text):
                why = "is empty" if not text else f"{text!r} is not an integer"
                report.errors.append(Issue("bad-label", split.name, row, str(root / split.paths[row]),
                                           f"label {why}; CrossEntropyLoss needs integer class ids 0..C-1"))
            elif int(text) < 0:
                report.errors.append(Issue("bad-label", split.name, row, str(root / split.paths[row]),
                                           f"label {text} is negative; class ids run from 0 to C-1"))
            else:
                values.append(int(text))
    classes = sorted({label for values in parsed.values() for label in values})
    for split in report.splits:
        counts = Counter(parsed[split.name])
        report.class_distribution[split.name] = {c: counts.get(c, 0) for c in classes}
        present = [n for n in counts.values() if n]
        report.imbalance_ratio[split.name] = max(present) / min(present) if present else None
        if not split.paths:
            report.warnings.append(Issue("empty-split", split.name, None, str(split.csv), "the CSV has no rows"))
    _check_balance(report, classes)


def _check_balance(report: DataReport, classes: list[int]) -> None:
    for index, split in enumerate(report.splits):
        counts = report.class_distribution[split.name]
        ratio = report.imbalance_ratio[split.name]
        absent = [c for c in classes if counts[c] == 0]
        if absent and split.paths:
            report.warnings.append(Issue("missing-class", split.name, None, str(split.csv),
                                         f"no rows of class(es) {_short(absent)}, which other splits have"))
        if ratio is None or ratio <= report.imbalance_threshold:
            continue
        most = max(counts, key=lambda c: counts[c])
        rarest = min((c for c in counts if counts[c]), key=lambda c: counts[c])
        advice = ("weight the loss or oversample (see the suggested class weights)" if index == 0 else
                  "accuracy on it is dominated by the majority class; also report per-class metrics")
        report.warnings.append(Issue("imbalance", split.name, None, str(split.csv),
                                     f"class {most} has {counts[most]} rows, class {rarest} has {counts[rarest]}: "
                                     f"imbalance ratio {ratio:.2f} > {report.imbalance_threshold:g}; {advice}"))
        if index == 0:
            report.suggested_weights = class_weights(counts)


def _short(values: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def class_weights(counts: dict[int, int]) -> list[float]:
    """Return inverse-frequency weights indexed by class id 0..max, with mean 1 over the classes present.

    ``w_c = (1 / n_c) / mean_j(1 / n_j)`` over the classes with ``n_j > 0``; a class id that has no rows
    gets weight 0, which is harmless because no sample carries it.
    """
    inverse = {c: 1.0 / n for c, n in counts.items() if n > 0}
    if not inverse:
        return []
    mean = sum(inverse.values()) / len(inverse)
    return [inverse[c] / mean if c in inverse else 0.0 for c in range(max(counts) + 1)]


def sampler_snippet(report: DataReport) -> str:
    """Return ready-to-paste code that balances the training split: a sampler or a weighted loss."""
    split = report.training_split
    weights = report.suggested_weights
    if split is None or weights is None:
        return ""
    tensor = "torch.tensor([" + ", ".join(f"{w:.4g}" for w in weights) + "])"
    if split.header:
        read = f"pd.read_csv({str(split.csv)!r})[{split.label_column!r}]"
    else:
        read = f"pd.read_csv({str(split.csv)!r}, header=None)[{int(split.label_column)}]"
    return (
        "# Use ONE of the two: oversampling and loss weighting together over-correct.\n"
        "import pandas as pd\n"
        "import torch\n"
        "from torch import nn\n"
        "from torch.utils.data import DataLoader, WeightedRandomSampler\n"
        "\n"
        f"# (a) Oversample: rare classes are drawn as often as common ones.\n"
        f"class_weights = {tensor}\n"
        f"labels = torch.tensor({read}.to_numpy())\n"
        "sampler = WeightedRandomSampler(class_weights[labels], num_samples=len(labels), replacement=True)\n"
        "train_loader = DataLoader(train_dataset, batch_size=batch_size, sampler=sampler)  # no shuffle=True\n"
        "\n"
        "# (b) Or weight the loss: mistakes on rare classes cost more.\n"
        f"criterion = nn.CrossEntropyLoss(weight={tensor})\n"
    )

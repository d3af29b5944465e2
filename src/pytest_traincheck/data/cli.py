"""The ``traincheck data check`` command: check annotation CSVs and their images before training."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TextIO

from pytest_traincheck.usage import EXIT_CLEAN, EXIT_FINDINGS, UsageError
from pytest_traincheck.data.check import (
    DEFAULT_IMBALANCE_THRESHOLD,
    WEIGHTS_FORMULA,
    AnnotationError,
    DataReport,
    Issue,
    check_dataset,
    load_split,
    sampler_snippet,
)

# Beyond this many issues of one kind the text report summarizes; JSON always lists them all.
_SHOWN_PER_KIND = 20
_SHOWN_CLASSES = 30
_INSTALL_HINT = "pip install 'pytest-traincheck[data]'"


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `traincheck data check` to the command table's subparsers."""
    data = sub.add_parser("data", help="check a dataset (annotation CSVs and images) before training")
    data.set_defaults(handler=_missing_action)
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(data))
    check = actions.add_parser(
        "check", help="check every row of annotation CSVs: files, images, labels, duplicates, balance",
        description="Check an image dataset laid out like the seed guide's CustomDataset: CSV rows of "
                    "(file name, integer label), files under --root. Exit 0 clean, 1 errors "
                    "(or warnings with --strict), 2 usage error.")
    check.add_argument("csv", nargs="?", type=Path,
                       help="the annotation CSV (the training split, if --split is also given)")
    check.add_argument("--split", action="append", type=Path, default=[], metavar="CSV",
                       help="another split's CSV, repeatable; the first CSV given is the training split")
    check.add_argument("--root", type=Path, default=Path("."), metavar="DIR",
                       help="folder the file names are relative to (default: the current folder)")
    check.add_argument("--path-column", metavar="NAME", help="column of file names (default: the first column)")
    check.add_argument("--label-column", metavar="NAME", help="column of integer labels (default: the second column)")
    check.add_argument("--no-header", action="store_true",
                       help="the CSVs have no header row; columns are then named 0, 1, ...")
    check.add_argument("--imbalance-threshold", type=float, default=DEFAULT_IMBALANCE_THRESHOLD, metavar="RATIO",
                       help="warn and suggest class weights when most/rarest class count exceeds this "
                            f"(default: {DEFAULT_IMBALANCE_THRESHOLD:g})")
    check.add_argument("--output-format", choices=("text", "json"), default="text",
                       help="text for people (default) or json")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too (imbalance, duplicates, ...)")
    check.set_defaults(handler=_run_check)


def _missing_action(args: argparse.Namespace) -> int:
    raise UsageError("missing action; try `traincheck data check annotations.csv --root images/`")


def _run_check(args: argparse.Namespace) -> int:
    csvs = ([args.csv] if args.csv is not None else []) + list(args.split)
    if not csvs:
        raise UsageError("give an annotation CSV, e.g. `traincheck data check annotations.csv --root images/`")
    names = [str(c) for c in csvs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"{repeated[0]} is given twice")
    if not args.imbalance_threshold >= 1.0:
        raise UsageError(f"--imbalance-threshold must be at least 1 (got {args.imbalance_threshold:g})")
    if not args.root.is_dir():
        raise UsageError(f"--root {args.root}: no such folder")
    for csv in csvs:
        # Checked before the slow pandas/scikit-image import so that a typo fails at once.
        if not csv.is_file():
            raise UsageError(f"{csv}: no such file")
    _require_extras()
    try:
        splits = [load_split(c, args.path_column, args.label_column, header=not args.no_header) for c in csvs]
    except AnnotationError as exc:
        raise UsageError(str(exc)) from None
    progress = _Progress(sys.stderr)
    try:
        report = check_dataset(splits, args.root, args.imbalance_threshold, on_row=progress)
    finally:
        progress.close()
    if args.output_format == "json":
        payload = report.to_json()
        payload["snippet"] = sampler_snippet(report) or None
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(report))
    if report.errors or (args.strict and report.warnings):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _require_extras() -> None:
    try:
        import numpy  # noqa: F401
        import pandas  # noqa: F401
        import skimage.io  # noqa: F401
    except ImportError as exc:
        missing = (exc.name or "a dependency").split(".")[0]
        raise UsageError(f"`traincheck data check` needs pandas, numpy and scikit-image ({missing} is missing): "
                             f"{_INSTALL_HINT}") from None


class _Progress:
    """Draw a one-line progress bar on a terminal; stay silent when the stream is a file or a pipe."""

    def __init__(self, stream: TextIO, width: int = 30, every: float = 0.1) -> None:
        self.stream = stream
        self.width = width
        self.every = every
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        """Redraw the bar, at most every ``every`` seconds and once at the end."""
        now = time.monotonic()
        if not self.enabled or (done < total and now - self._last < self.every):
            return
        self._last = now
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\rchecking [{bar}] {done}/{total} {100 * done // max(total, 1)}%")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar so that the report starts on a clean line."""
        if self._drawn:
            self.stream.write("\r" + " " * (self.width + 40) + "\r")
            self.stream.flush()


def _where(issue: Issue) -> str:
    if issue.row is None:
        return issue.split or "--root"
    return f"{issue.split} row {issue.row}"


def _issue_lines(title: str, issues: list[Issue]) -> list[str]:
    if not issues:
        return []
    lines = [f"{title} ({len(issues)}):"]
    by_kind: dict[str, list[Issue]] = defaultdict(list)
    for issue in issues:
        by_kind[issue.kind].append(issue)
    width = max(len(_where(i)) for i in issues)
    for kind, group in by_kind.items():
        for issue in group[:_SHOWN_PER_KIND]:
            lines.append(f"  {_where(issue).ljust(width)}  {kind:<21}  {issue.path}: {issue.message}")
        if len(group) > _SHOWN_PER_KIND:
            lines.append(f"  ... and {len(group) - _SHOWN_PER_KIND} more {kind} (--output-format json lists all)")
    return lines + [""]


def _format_line(report: DataReport) -> list[str]:
    parts = []
    for prop in ("size", "channels", "dtype"):
        info = report.image_format.get(prop)
        if info:
            value = "x".join(map(str, info["majority"])) if prop == "size" else info["majority"]
            parts.append(f"{prop} {value} ({info['count']} of {report.images_read})")
    return [f"Images: {', '.join(parts)}", ""] if parts else []


def _distribution_lines(report: DataReport) -> list[str]:
    names = [s.name for s in report.splits]
    classes = sorted({c for counts in report.class_distribution.values() for c in counts})
    if not classes:
        return []
    cells: list[list[str]] = [["class", *names]]
    for c in classes[:_SHOWN_CLASSES]:
        row = [str(c)]
        for name in names:
            counts = report.class_distribution[name]
            total = sum(counts.values())
            row.append(f"{counts[c]} ({100 * counts[c] / total:.1f}%)" if total else "0")
        cells.append(row)
    if len(classes) > _SHOWN_CLASSES:
        cells.append([f"... {len(classes) - _SHOWN_CLASSES} more", *[""] * len(names)])
    ratios = [report.imbalance_ratio[n] for n in names]
    cells.append(["ratio", *("-" if r is None else f"{r:.2f}" for r in ratios)])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["Class distribution (imbalance ratio = most / rarest class count):"]
    lines += ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    return lines + [""]


def _weights_lines(report: DataReport) -> list[str]:
    split = report.training_split
    if split is None or report.suggested_weights is None:
        return []
    ratio = report.imbalance_ratio[split.name]
    lines = [f"Suggested class weights for {split.name} (imbalance {ratio:.2f} > {report.imbalance_threshold:g}):",
             f"  {WEIGHTS_FORMULA}"]
    lines += [f"  class {c}: {w:.4g}" for c, w in list(enumerate(report.suggested_weights))[:_SHOWN_CLASSES]]
    lines += ["", *("    " + line if line else "" for line in sampler_snippet(report).splitlines()), ""]
    return lines


def render_text(report: DataReport) -> str:
    """Return the report for people."""
    rows = ", ".join(f"{s.name}: {len(s.paths)} rows" for s in report.splits)
    lines = [f"Checked {report.files_checked} files under {report.root} ({rows}); "
             f"{report.images_read} images decoded.", ""]
    lines += _issue_lines("Errors", report.errors)
    lines += _issue_lines("Warnings", report.warnings)
    lines += _format_line(report)
    lines += _distribution_lines(report)
    lines += _weights_lines(report)
    errors, warnings = len(report.errors), len(report.warnings)
    if errors or warnings:
        lines.append(f"Found {errors} error{'s' * (errors != 1)} and {warnings} warning{'s' * (warnings != 1)}.")
    else:
        lines.append("All clean: no errors, no warnings.")
    return "\n".join(lines) + "\n"

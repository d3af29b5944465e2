"""Measure `traincheck lint` on hand-labelled real training code: recall and precision per rule family.

Run by hand (not in CI; it needs repository snapshots):

    python bench/real_corpus.py                      # materialise, lint, print the figures
    python bench/real_corpus.py --report misses.md   # also write every miss and false positive

`bench/corpus_labels.json` holds only references (repository, commit, path)
and hand-made labels. The files themselves come from bare git snapshots of
the repositories, one folder per repository under the mirror folder
(`owner+name/repo`, as the search tool's `fetch github:owner/name` leaves
them; `--mirror` or `TRAINCHECK_MIRROR` point elsewhere). They are written to
`bench/corpus/labelled/` (ignored by git), keeping each repository's relative
paths so that imports between its files resolve as they do in the repository.

The lint runs the default rule set (`traincheck lint --isolated`, no
`--select`): the figures are what a user gets without configuration. With
`--select ALL`, findings of the codes the labels leave out on purpose
(`not_labelled_codes`: TRN402 and the dynamic-only codes) are counted apart. Only the
command line and its JSON output are used. A finding matches a label when it
is in the same file, has the same code and lies within `line_tolerance` lines
of the label (or inside the label's `lines` span, or at one of the label's
`also` places: the other file of a cross-file mistake, such as the loss call
of a model whose softmax is defined elsewhere). In a notebook a label names its
cell (1-based among all cells, as traincheck reports it) and the line within
that cell. Recall counts bug-severity
labels; precision counts every finding of the default set against all labels
(a finding on a style label is correct).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FAMILIES = {
    "TRN1": "loop and gradients",
    "TRN2": "model and loss",
    "TRN3": "train/eval discipline",
    "TRN4": "data",
    "TRN5": "checkpoints",
    "TRN7": "distributed",
    "TRN9": "deprecated API",
}


class CorpusError(Exception):
    """A problem that ends the run with one line."""


def git_dir(mirror: Path, repo: str) -> Path:
    """Return the bare git directory of `repo`'s snapshot, or raise with how to fetch it."""
    root = mirror / repo.replace("/", "+") / "repo"
    for candidate in (root / ".git", root):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    raise CorpusError(f"no snapshot of {repo} under {mirror}: fetch it (search tool: fetch github:{repo}) "
                      f"or pass --mirror, then run again")


def materialise(entries: list[dict[str, Any]], mirror: Path, out: Path) -> dict[tuple[str, str], Path]:
    """Write every labelled file under `out`, one folder per repository snapshot; return where each landed."""
    if out.exists():
        shutil.rmtree(out)
    placed: dict[tuple[str, str], Path] = {}
    for entry in entries:
        repo, commit, path = entry["repo"], entry["commit"], entry["path"]
        gd = git_dir(mirror, repo)
        shown = subprocess.run(["git", "--git-dir", str(gd), "show", f"{commit}:{path}"],
                               capture_output=True)
        if shown.returncode != 0:
            raise CorpusError(f"{repo}@{commit[:12]}:{path} is not in the snapshot at {gd}: "
                              f"fetch a newer snapshot of {repo} (search tool: fetch github:{repo})")
        target = out / f"{repo.replace('/', '+')}@{commit[:12]}" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shown.stdout)
        placed[(repo, commit + ":" + path)] = target
    return placed


def lint(out: Path, select: str | None) -> list[dict[str, Any]]:
    """Run the traincheck command on `out` and return its JSON findings."""
    command = shutil.which("traincheck")
    base = [command] if command else [sys.executable, "-m", "pytest_traincheck"]
    args = base + ["lint", "--isolated", "--no-cache", "--exit-zero", "--output-format", "json"]
    if select:
        args += ["--select", select]
    done = subprocess.run(args + ["."], cwd=out, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CorpusError(f"traincheck lint failed (exit {done.returncode}): {tail}")
    try:
        return json.loads(done.stdout or "[]")
    except json.JSONDecodeError as error:
        raise CorpusError(f"traincheck lint printed no JSON: {error}") from error


def matches(label: dict[str, Any], line: int, tolerance: int, cell: int | None = None) -> bool:
    """True if a finding on `line` (of notebook cell `cell`) is this label's mistake."""
    if label.get("cell") != cell:
        return False
    span = label.get("lines")
    if span and span[0] <= line <= span[1]:
        return True
    return abs(label["line"] - line) <= tolerance


def family(code: str) -> str:
    """Return the family prefix (TRN1 ... TRN9) of a code."""
    return code[:4]


def score(entries: list[dict[str, Any]], placed: dict[tuple[str, str], Path], out: Path,
          findings: list[dict[str, Any]], tolerance: int, unlabelled: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Match findings to labels; return counts per code plus the lists of misses and false positives."""
    by_file: dict[str, dict[str, Any]] = {}
    for entry in entries:
        rel = placed[(entry["repo"], entry["commit"] + ":" + entry["path"])].relative_to(out).as_posix()
        by_file[rel] = entry
    # where each label may be reported: its own file, plus the `also` places of a cross-file mistake
    candidates: dict[str, list[tuple[str, int, dict[str, Any]]]] = defaultdict(list)
    for rel, entry in by_file.items():
        folder = rel.split("/", 1)[0]
        for index, label in enumerate(entry["labels"]):
            candidates[rel].append((rel, index, label))
            for other in label.get("also", []):
                candidates[f"{folder}/{other['path']}"].append((rel, index, {**label, **other, "lines": None}))
    seen_codes = {f["code"] for f in findings}
    matched: set[tuple[str, int]] = set()
    false_positives, unparsed = [], []
    correct = defaultdict(int)
    total = defaultdict(int)
    skipped: dict[str, int] = defaultdict(int)
    for finding in findings:
        rel = Path(finding["path"]).as_posix().removeprefix("./")
        code, line, cell = finding["code"], int(finding["line"]), finding.get("cell")
        if code in ("TRN000", "TRN001", "TRN002"):  # the file could not be checked at all
            unparsed.append((rel, line, code, finding.get("message", "")))
            continue
        if code in unlabelled:  # a code the labels deliberately leave out (e.g. TRN402 under --select ALL)
            skipped[code] += 1
            continue
        total[code] += 1
        hit = next(((owner, index) for owner, index, label in candidates.get(rel, [])
                    if label["code"] == code and matches(label, line, tolerance, cell)), None)
        if hit is None:
            where = f"{line}" if cell is None else f"cell {cell} line {line}"
            false_positives.append((rel, where, code, finding.get("message", "")))
        else:
            correct[code] += 1
            matched.add(hit)
    bugs, bugs_found, styles, styles_found = (defaultdict(int) for _ in range(4))
    misses = []
    for rel, entry in by_file.items():
        for index, label in enumerate(entry["labels"]):
            code = label["code"]
            found = (rel, index) in matched
            if label["severity"] == "bug":
                bugs[code] += 1
                bugs_found[code] += found
                if not found:
                    misses.append((rel, label))
            else:
                styles[code] += 1
                styles_found[code] += found
    return {"bugs": bugs, "bugs_found": bugs_found, "styles": styles, "styles_found": styles_found,
            "findings": total, "correct": correct, "misses": misses, "false_positives": false_positives,
            "unparsed": unparsed, "codes": seen_codes, "skipped": skipped}


def ratio(part: int, whole: int) -> str:
    """Format part/whole as a two-decimal ratio, or a dash when there is nothing to divide."""
    return f"{part / whole:.2f}" if whole else "-"


def table(result: dict[str, Any]) -> list[str]:
    """Return the per-family and per-code markdown tables."""
    rows = ["| family | bug labels | found | recall | style labels | found | findings | correct | precision |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    keys = ("bugs", "bugs_found", "styles", "styles_found", "findings", "correct")
    grand = dict.fromkeys(keys, 0)
    codes = sorted(set().union(*(result[k].keys() for k in keys)))
    for prefix, name in FAMILIES.items():
        sums = {k: sum(v for c, v in result[k].items() if family(c) == prefix) for k in keys}
        for k in keys:
            grand[k] += sums[k]
        rows.append(f"| {prefix}xx {name} | {sums['bugs']} | {sums['bugs_found']} | "
                    f"{ratio(sums['bugs_found'], sums['bugs'])} | {sums['styles']} | {sums['styles_found']} | "
                    f"{sums['findings']} | {sums['correct']} | {ratio(sums['correct'], sums['findings'])} |")
    rows.append(f"| all | {grand['bugs']} | {grand['bugs_found']} | {ratio(grand['bugs_found'], grand['bugs'])} | "
                f"{grand['styles']} | {grand['styles_found']} | {grand['findings']} | {grand['correct']} | "
                f"{ratio(grand['correct'], grand['findings'])} |")
    rows += ["", "| code | bug labels | found | recall | style labels | found | findings | correct | precision |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for code in codes:
        v = {k: result[k].get(code, 0) for k in keys}
        rows.append(f"| {code} | {v['bugs']} | {v['bugs_found']} | {ratio(v['bugs_found'], v['bugs'])} | "
                    f"{v['styles']} | {v['styles_found']} | {v['findings']} | {v['correct']} | "
                    f"{ratio(v['correct'], v['findings'])} |")
    return rows


def report(result: dict[str, Any], entries: list[dict[str, Any]], out: Path) -> list[str]:
    """Return the markdown list of every miss (bug labels) and every false positive."""
    lines = ["## Misses (bug labels no finding matched)", ""]
    for rel, label in sorted(result["misses"], key=lambda m: (m[1]["code"], m[0], m[1]["line"])):
        where = label["line"] if "cell" not in label else f"cell {label['cell']} line {label['line']}"
        lines.append(f"- {label['code']} `{rel}:{where}` — {label['note']}")
    lines += ["", "## Style labels no finding matched", ""]
    by_code: dict[str, int] = defaultdict(int)
    for code, n in result["styles"].items():
        by_code[code] = n - result["styles_found"].get(code, 0)
    lines.append(", ".join(f"{c}: {n}" for c, n in sorted(by_code.items()) if n) or "none")
    lines += ["", "## False positives (findings no label matched)", ""]
    for rel, line, code, message in sorted(result["false_positives"], key=lambda f: (f[2], f[0], str(f[1]))):
        lines.append(f"- {code} `{rel}:{line}` — {message}")
    if result["unparsed"]:
        lines += ["", "## Files traincheck could not check", ""]
        lines += [f"- {code} `{rel}:{line}` — {message}" for rel, line, code, message in result["unparsed"]]
    return lines


def main() -> int:
    """Materialise the corpus, lint it and print recall and precision."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=HERE / "corpus_labels.json")
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("TRAINCHECK_MIRROR", "/work/.mirror")))
    parser.add_argument("--out", type=Path, default=HERE / "corpus" / "labelled")
    parser.add_argument("--select", help="lint these codes instead of the default set (e.g. ALL)")
    parser.add_argument("--report", type=Path, help="write every miss and false positive to this markdown file")
    args = parser.parse_args()
    try:
        doc = json.loads(args.labels.read_text())
        entries = doc["files"]
        tolerance = int(doc.get("line_tolerance", 2))
        placed = materialise(entries, args.mirror, args.out)
        findings = lint(args.out, args.select)
    except (OSError, KeyError, ValueError, CorpusError) as error:
        print(f"real_corpus: {error}", file=sys.stderr)
        return 2
    result = score(entries, placed, args.out, findings, tolerance, frozenset(doc.get("not_labelled_codes", ())))
    repos = {e["repo"] for e in entries}
    lines = sum(len(p.read_bytes().splitlines()) for p in placed.values())
    labels = sum(len(e["labels"]) for e in entries)
    summary = (f"corpus: {len(entries)} files, {lines} lines, {len(repos)} repositories, "
               f"{sum(result['bugs'].values())} bug labels, {labels - sum(result['bugs'].values())} style labels; "
               f"rules: {'--select ' + args.select if args.select else 'default set'}; "
               f"match: same file and code, line within {tolerance} or inside the label's span")
    print(summary)
    print()
    print("\n".join(table(result)))
    print(f"\nmisses: {len(result['misses'])}  false positives: {len(result['false_positives'])}  "
          f"unparsed files: {len(result['unparsed'])}")
    if result["skipped"]:
        print("not scored (codes the labels leave out): "
              + ", ".join(f"{code} {n}" for code, n in sorted(result["skipped"].items())))
    if args.report:
        text = ["# traincheck on the labelled real-code corpus", "", summary, "", *table(result), "",
                *report(result, entries, args.out), ""]
        args.report.write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Robustness run: lint (and optionally fix, on a copy) a large corpus of real Python and report crashes.

Run by hand, not in CI (it takes minutes):

    python bench/crash_corpus.py bench/corpus /usr/lib/python3.11          # lint, crashes, time per rule
    python bench/crash_corpus.py bench/corpus --fix                          # fix a copy, verify round trips

A crash is a TRN001 finding (a rule raised; the engine kept the other rules'
findings) or an exception escaping the engine. Generated hostile cases run
first: expression chains from 100 to 30,000 deep, `and` chains and dotted
imports among them, in a parallel run and a one-job run (each must cost its
file one finding, never the run or a worker), and CRLF, latin-1 and BOM files whose fix
must keep their bytes' encoding. With `--fix`, every fixed file
must re-parse, a second `--fix` must change nothing, and only the lines of the
fixed findings may change.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper

from pytest_traincheck.lint import engine
from pytest_traincheck.lint.analysis import build_visitors
from pytest_traincheck.lint.context import FileContext
from pytest_traincheck.lint.registry import all_rules
from pytest_traincheck.lint.walk import walk


def _crashes_in(path: Path, settings: engine.Settings) -> list[str]:
    """Lint one file; return its crashes (an escaped exception or TRN001 findings)."""
    try:
        result = engine.lint_file(path, str(path), settings)
    except Exception:
        return [f"{path}: engine raised\n{traceback.format_exc()}"]
    return [f"{path}: {f.message}" for f in result.findings if f.code == "TRN001"]


def time_per_rule(files: list[Path], sample: int) -> dict[str, float]:
    """Return seconds each rule adds to a bare walk (imports only), over the first ``sample`` parsable files.

    A rule's time includes the shared analyses it reads, which a full run pays once for all rules.
    """
    totals: dict[str, float] = defaultdict(float)
    for path in files[:sample]:
        try:
            module = cst.parse_module(path.read_bytes())
        except Exception:
            continue
        for rule in [None, *all_rules()]:
            context = FileContext(str(path), "", module, MetadataWrapper(module, unsafe_skip_copy=True))
            visitors = build_visitors(context, [rule] if rule is not None else [])  # with the analyses it reads
            start = time.perf_counter()
            try:
                walk(module, visitors)
            except Exception:
                pass
            totals[rule.CODE if rule is not None else "walk"] += time.perf_counter() - start
    baseline = totals.pop("walk")
    return {code: max(0.0, seconds - baseline) for code, seconds in totals.items()}


def check_fix_round_trip(root: Path) -> list[str]:
    """Fix every file under a copy of ``root`` and return the problems found."""
    problems: list[str] = []
    settings = engine.Settings(tuple(r.CODE for r in all_rules()), fix=True)
    for path in sorted(root.rglob("*.py")):
        data = path.read_bytes()
        try:
            result = engine.lint_bytes(str(path), data, settings)
        except Exception:
            problems.append(f"{path}: engine raised while fixing:\n{traceback.format_exc()}")
            continue
        if result.fixed_source is None:
            continue
        fixed = result.fixed_source
        try:
            cst.parse_module(fixed)
        except Exception as exc:
            problems.append(f"{path}: fixed code does not parse: {exc}")
            continue
        again = engine.lint_bytes(str(path), fixed.encode(result.encoding), settings)
        if again.fixed_source is not None:
            problems.append(f"{path}: a second --fix changed the file again")
        old_lines = data.decode(result.encoding, "replace").splitlines()
        changed = sum(1 for line in difflib.ndiff(old_lines, fixed.splitlines()) if line[:1] in "+-")
        if changed > 4 * result.fixed + 4:  # a fix touches its own lines (an inserted line counts twice)
            problems.append(f"{path}: {changed} lines changed for {result.fixed} fixes")
    return problems


_GOOD = "import torch\nouter = torch.ger(a, b)\n"
_CHAINS = {
    "plus": lambda n: "import torch\nx = " + " +\\\n    ".join(["a"] * n) + "\n",
    "attribute": lambda n: "import torch\nx = a" + "\\\n    .b" * n + "\n",
    "not": lambda n: "import torch\nx = " + "not \\\n" * n + "a\n",
    "call": lambda n: "import torch\nx = f" + "()" * min(n, 5000) + "\n",
    "string": lambda n: "import torch\nx = (" + "\n".join(['"a"'] * n) + ")\n",
    # One flat node for CPython, n nested ones for libcst (whose native parser crashed on 9,000).
    "and": lambda n: "import torch\nx = (a\n" + " and a\n" * n + ")\n",
    "import": lambda n: "import torch\nimport " + ".".join(["a"] * min(n, 9000)) + "\n",
    "from": lambda n: "import torch\nfrom " + ".".join(["a"] * min(n, 9000)) + " import b\n",
}
_ENCODED = {
    "crlf": ("import torch\r\ntorch.nn.utils.clip_grad_norm(m.parameters(), 1.0)\r\n").encode(),
    "latin1": ("# -*- coding: latin-1 -*-\nname = 'caf\xe9'\nimport torch\n"
               "torch.nn.utils.clip_grad_norm(m.parameters(), 1.0)\n").encode("latin-1"),
    "bom": b"\xef\xbb\xbfimport torch\ntorch.nn.utils.clip_grad_norm(m.parameters(), 1.0)\n",
}


def hostile_cases(jobs: int) -> list[str]:
    """Deep nesting and encodings: one finding per deep file, other files intact, fixes keep the bytes' form."""
    problems: list[str] = []
    settings = engine.Settings(tuple(rule.CODE for rule in all_rules()))
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for kind, make in _CHAINS.items():
            for depth in (100, 350, 1000, 5000, 30000):
                path = Path(tmp) / f"{kind}_{depth}.py"
                path.write_text(make(depth))
                files.append((path, path.name))
        for i in range(4):
            (Path(tmp) / f"good{i}.py").write_text(_GOOD)
            files.append((Path(tmp) / f"good{i}.py", f"good{i}.py"))
        for label, workers in (("parallel", max(jobs, 2)), ("-j1", 1)):  # the command line isolates -j1 too
            try:
                results = engine.run_files(files, settings, jobs=workers, isolate=True)
            except Exception:
                return [f"deep nesting ({label}): the run raised\n{traceback.format_exc()}"]
            for result in results:
                codes = [f.code for f in result.findings]
                if result.path.startswith("good") and codes != ["TRN901"]:
                    problems.append(f"{label} {result.path}: expected one TRN901, got {codes}")
                elif not result.path.startswith("good") and len(codes) > 1:
                    problems.append(f"{label} {result.path}: {len(codes)} findings for one deep file: {codes}")
    fix = engine.Settings(settings.codes, fix=True)
    for kind, data in _ENCODED.items():
        result = engine.lint_bytes(f"{kind}.py", data, fix)
        if result.fixed_source is None:
            problems.append(f"encoding {kind}: no fix applied")
            continue
        fixed = result.fixed_source.encode(result.encoding)
        same_form = {"crlf": fixed.count(b"\r\n") == data.count(b"\r\n"),
                     "latin1": b"caf\xe9" in fixed, "bom": fixed.startswith(b"\xef\xbb\xbf")}[kind]
        if not same_form:
            problems.append(f"encoding {kind}: the fix changed the file's encoding or line endings")
    return problems


def main() -> int:
    """Run the robustness checks and print a report; exit 1 on any crash."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--fix", action="store_true", help="also fix a copy of the corpus and verify it")
    parser.add_argument("--rule-sample", type=int, default=300, help="files used for the time-per-rule table")
    parser.add_argument("--jobs", type=int, default=engine.default_jobs())
    args = parser.parse_args()
    files = sorted({p for root in args.paths for p in root.rglob("*.py")})
    codes = tuple(rule.CODE for rule in all_rules())
    settings = engine.Settings(codes)
    crashes: list[str] = hostile_cases(args.jobs)
    print(f"hostile cases (deep nesting, encodings): {len(crashes)} problems")
    for problem in crashes:
        print("  " + problem)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for found in pool.map(_crashes_in, files, [settings] * len(files), chunksize=16):
            crashes.extend(found)
    elapsed = time.perf_counter() - start
    print(f"files: {len(files)}  seconds: {elapsed:.1f}  crashes: {len(crashes)}")
    for crash in crashes[:50]:
        print("  " + crash)
    print("\nseconds each rule adds to a bare traversal, over the first %d files:" % args.rule_sample)
    for code, seconds in sorted(time_per_rule(files, args.rule_sample).items(), key=lambda kv: -kv[1]):
        print(f"  {code}  {seconds:.2f}")
    if args.fix:
        with tempfile.TemporaryDirectory() as tmp:
            problems: list[str] = []
            for root in args.paths:
                copy = Path(tmp) / root.name
                shutil.copytree(root, copy, ignore=shutil.ignore_patterns("*.so", "*.pyc"), symlinks=True)
                problems.extend(check_fix_round_trip(copy))
            print(f"\nfix round trip problems: {len(problems)}")
            for problem in problems[:50]:
                print("  " + problem)
            crashes.extend(problems)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())

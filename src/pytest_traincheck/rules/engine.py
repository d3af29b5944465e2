"""The static engine: parse each file once, run every enabled rule in one traversal, settle cross-file findings."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from pytest_traincheck.config import LintConfig
from pytest_traincheck.report import Finding, LintSummary, sorted_findings
from pytest_traincheck.rules import cache, fixer
from pytest_traincheck.rules.base import Condition, RawFinding, Rule
from pytest_traincheck.rules.context import FileContext, ImportTracker
from pytest_traincheck.rules.discovery import discover, display_path
from pytest_traincheck.rules.facts import FactsCollector, FileFacts, ProjectFacts
from pytest_traincheck.rules.noqa import parse_noqa, suppressed
from pytest_traincheck.rules.registry import all_rules
from pytest_traincheck.rules.walk import walk

# Beyond these, libcst's parser becomes too slow (super-linear on huge files and long
# operator chains) or crashes (deep nesting): such files are reported, not linted.
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_LINE_CHARS = 20_000
MAX_NESTING = 200  # CPython's own limit for nested brackets
# A file that imports another deep-learning framework and never mentions torch is that
# framework's code (d2l ships mxnet.py and tensorflow.py twins of its torch.py): not linted.
_OTHER_FRAMEWORK = re.compile(rb"^\s*(?:import|from)\s+(?:mxnet|tensorflow|jax|keras|paddle|mindspore|oneflow)\b",
                              re.MULTILINE)
# Words a file must contain for the facts pass to learn anything about its classes.
FACTS_TRIGGERS = ("torch", "nn.", "Module", "softmax", "sigmoid", "LSTM", "GRU", "RNN")


@dataclass
class Settings:
    """What a worker needs to lint one file (picklable)."""

    codes: tuple[str, ...]
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    fix: bool = False
    unsafe_fixes: bool = False
    torch_version: Optional[str] = None
    root: str = "."
    cache_dir: Optional[str] = None  # None: no cache

    def signature(self) -> tuple[object, ...]:
        """Return what, besides the file's bytes, decides its findings."""
        return (self.codes, sorted(self.per_file_ignores.items()), self.unsafe_fixes, self.torch_version)

    def rules(self) -> list[type[Rule]]:
        """Return the enabled rule classes."""
        return [rule for rule in all_rules() if rule.CODE in self.codes]


@dataclass
class FileResult:
    """Everything one file contributes to the run."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    deferred: list[tuple[Finding, Condition]] = field(default_factory=list)
    facts: FileFacts = field(default_factory=FileFacts)
    fixed_source: Optional[str] = None
    encoding: str = "utf-8"
    fixed: int = 0
    internal_error: bool = False


def _syntax_finding(path: str, line: int, column: int, message: str) -> Finding:
    return Finding(path, max(line, 1), max(column, 1), max(line, 1), max(column, 1), "TRN000", message)


def decode_problem(data: bytes) -> Optional[str]:
    """Return why ``data`` cannot be linted as Python text, or None."""
    if len(data) > MAX_FILE_BYTES:
        return f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB (generated code?); not linted"
    if b"\x00" in data:
        return "file contains NUL bytes (binary?); not linted"
    longest = max((len(line) for line in data.splitlines()), default=0)
    if longest > MAX_LINE_CHARS:
        return f"a line is {longest} characters long (generated code?); not linted"
    if _nesting(data) > MAX_NESTING:
        try:
            ast.parse(data)
        except SyntaxError as exc:  # CPython refuses it too: report its words
            return f"SyntaxError: {exc.msg}"
        except (ValueError, RecursionError, MemoryError):
            pass
        return f"brackets nested deeper than {MAX_NESTING} levels; not linted"
    return None


def _nesting(data: bytes) -> int:
    """Return the deepest bracket nesting, counting brackets inside strings too (an upper bound)."""
    brackets = data.translate(None, _NOT_BRACKETS)
    if len(brackets) <= MAX_NESTING:
        return 0
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENING:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif depth:
            depth -= 1
    return deepest


_OPENING = frozenset(b"([{")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"()[]{}")


def parse(path: str, data: bytes) -> tuple[Optional[cst.Module], Optional[Finding]]:
    """Parse ``data`` with libcst, turning every failure into a TRN000 finding."""
    problem = decode_problem(data)
    if problem:
        return None, _syntax_finding(path, 1, 1, problem)
    try:
        return cst.parse_module(data), None
    except cst.ParserSyntaxError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "invalid syntax"
        return None, _syntax_finding(path, exc.raw_line, exc.raw_column + 1, f"SyntaxError: {message}")
    except (UnicodeDecodeError, LookupError) as exc:
        return None, _syntax_finding(path, 1, 1, f"cannot decode file: {exc}")
    except RecursionError:
        return None, _syntax_finding(path, 1, 1, "expression nesting too deep to parse")
    except Exception as exc:  # libcst raises assorted errors on exotic input
        return None, _syntax_finding(path, 1, 1, f"cannot parse: {type(exc).__name__}: {exc}")


def _triggered(rules: Sequence[type[Rule]], text: str) -> list[type[Rule]]:
    return [r for r in rules if not r.TRIGGERS or any(t in text for t in r.TRIGGERS)]


def _traverse(context: FileContext, rules: Sequence[type[Rule]]) -> tuple[FileFacts, list[str]]:
    """Run the import tracker, the facts collector and ``rules`` in one traversal."""
    facts = FactsCollector(context)
    visitors: list[cst.BatchableCSTVisitor] = [ImportTracker(context), facts]
    instances = [rule(context) for rule in rules]
    try:
        walk(context.module, [*visitors, *instances])
        return facts.facts, []
    except RecursionError:
        raise
    except Exception:
        pass
    # Some rule raised: run each rule alone, on a fresh context so that no state the failed
    # traversal left behind leaks in, to keep the others' findings and name the culprit.
    failed: list[str] = []
    context.raw.clear()
    facts = FactsCollector(context.fresh())
    walk(context.module, [ImportTracker(facts.context), facts])
    for rule in rules:
        alone = context.fresh()
        try:
            walk(context.module, [ImportTracker(alone), rule(alone)])
        except Exception as exc:
            failed.append(f"{rule.CODE} ({rule.__name__}) raised {type(exc).__name__}: {exc}")
            continue
        context.raw.extend(alone.raw)
    return facts.facts, failed


def _to_finding(context: FileContext, raw: RawFinding, fixable: bool) -> Finding:
    pos = context.wrapper.resolve(PositionProvider)[raw.node]
    rule = raw.rule
    return Finding(
        path=context.path,
        line=pos.start.line,
        column=pos.start.column + 1,
        end_line=pos.end.line,
        end_column=pos.end.column + 1,
        code=rule.CODE,
        message=raw.message,
        fixable=fixable,
        fix_title=rule.FIX_TITLE,
        severity=rule.SEVERITY,
        unsafe_fix=raw.fix is not None and not rule.FIX_SAFE,
    )


def _file_ignores(settings: Settings, path: str) -> list[str]:
    codes: list[str] = []
    for pattern, ignored in settings.per_file_ignores.items():
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern) or path.startswith(pattern.rstrip("/") + "/"):
            codes.extend(ignored)
    return codes


def _can_fix(raw: RawFinding, settings: Settings) -> bool:
    return raw.fix is not None and (raw.rule.FIX_SAFE or settings.unsafe_fixes)


def analyse(path: str, data: bytes, settings: Settings) -> tuple[FileResult, Optional[cst.Module], list[RawFinding]]:
    """Lint one file's bytes; return the result, the tree and the raw findings kept."""
    result = FileResult(path)
    text = data.decode("utf-8", errors="replace")
    rules = _triggered(settings.rules(), text)
    needs_facts = any(t in text for t in FACTS_TRIGGERS)
    if b"torch" not in data and _OTHER_FRAMEWORK.search(data):
        rules, needs_facts = [], False
    if not rules and not needs_facts:
        return result, None, []  # nothing could fire: skip the parse
    module, error = parse(path, data)
    if error is not None:
        result.findings.append(error)  # a file that does not parse is always reported
        return result, None, []
    context = FileContext(path, text, module, MetadataWrapper(module, unsafe_skip_copy=True), settings.torch_version)
    try:
        facts, failures = _traverse(context, rules)
    except RecursionError:
        result.findings.append(_syntax_finding(path, 1, 1, "expression nesting too deep to analyse"))
        return result, None, []
    result.facts = facts
    for failure in failures:
        result.internal_error = True
        result.findings.append(Finding(path, 1, 1, 1, 1, "TRN001", f"internal error: {failure}"))
    noqa = parse_noqa(text)
    ignored = _file_ignores(settings, path)
    kept: list[RawFinding] = []
    for raw in context.raw:
        finding = _to_finding(context, raw, fixable=_can_fix(raw, settings))
        if any(finding.code.startswith(c) for c in ignored):
            continue
        if suppressed(noqa, finding.line, finding.code) or suppressed(noqa, finding.end_line, finding.code):
            continue
        kept.append(raw)
        if raw.condition is None:
            result.findings.append(finding)
        else:
            result.deferred.append((finding, raw.condition))
    return result, module, kept


def lint_bytes(path: str, data: bytes, settings: Settings) -> FileResult:
    """Lint one file, applying fixes first when ``settings.fix`` is on."""
    result, module, kept = analyse(path, data, settings)
    if not settings.fix or module is None:
        return result
    fixed_total = 0
    current = data
    for _ in range(fixer.MAX_ROUNDS):
        fixes = [raw for raw in kept if _can_fix(raw, settings) and raw.condition is None]
        if not fixes or module is None:
            break
        new_source = fixer.apply(module, fixes)
        if new_source is None or new_source.encode(module.encoding) == current:
            break
        fixed_total += len(fixes)
        current = new_source.encode(module.encoding)
        result, module, kept = analyse(path, current, settings)
    if fixed_total:
        encoding = module.encoding if module is not None else "utf-8"
        result.fixed_source = current.decode(encoding)
        result.encoding = encoding
        result.fixed = fixed_total
    return result


def lint_file(path: Path, shown: str, settings: Settings) -> FileResult:
    """Read and lint one file; unreadable files become TRN000 findings."""
    if not path.is_file():  # a FIFO would block forever; a folder named x.py cannot be read
        return FileResult(shown, findings=[_syntax_finding(shown, 1, 1, "not a regular file; not linted")])
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileResult(shown, findings=[_syntax_finding(shown, 1, 1, f"cannot read file: {exc.strerror}")])
    if settings.cache_dir is None or settings.fix:
        return lint_bytes(shown, data, settings)
    key = cache.entry_key(shown, data, settings)
    cached = cache.load(Path(settings.cache_dir), key)
    if cached is not None:
        return cached
    return _lint_and_store(shown, data, key, settings)


def _lint_and_store(shown: str, data: bytes, key: str, settings: Settings) -> FileResult:
    result = lint_bytes(shown, data, settings)
    if not result.internal_error:
        cache.store(Path(settings.cache_dir), key, result)
    return result


def _worker(args: tuple[Path, str, Settings]) -> FileResult:
    return lint_file(*args)


def settle(results: Iterable[FileResult]) -> list[Finding]:
    """The project pass: keep deferred findings whose condition the merged facts satisfy."""
    results = list(results)
    project = ProjectFacts((r.path, r.facts) for r in results)
    findings: list[Finding] = []
    for result in results:
        findings.extend(result.findings)
        findings.extend(f for f, condition in result.deferred if project.holds(condition, result.path))
    return sorted_findings(findings)


def settings_from(config: LintConfig, *, fix: bool = False, unsafe_fixes: bool = False,
                  cache_dir: Optional[Path] = None) -> Settings:
    """Build worker settings from the merged configuration."""
    codes = tuple(rule.CODE for rule in all_rules() if config.enabled(rule.CODE, rule.DEFAULT_ON))
    return Settings(codes, dict(config.per_file_ignores), fix, unsafe_fixes, config.torch_version,
                    str(config.root), str(cache_dir) if cache_dir is not None else None)


def run_files(
    files: Sequence[tuple[Path, str]], settings: Settings, jobs: int = 1
) -> list[FileResult]:
    """Lint ``(path, shown name)`` pairs, in worker processes when it pays off."""
    results: dict[int, FileResult] = {}
    if settings.cache_dir is not None and not settings.fix:
        # Answer cache hits here: a warm run then starts no worker process at all.
        for index, (path, shown) in enumerate(files):
            hit = _cached(path, shown, settings)
            if hit is not None:
                results[index] = hit
    misses = [i for i in range(len(files)) if i not in results]
    for index, result in zip(misses, _run_uncached([files[i] for i in misses], settings, jobs)):
        results[index] = result
    return [results[i] for i in range(len(files))]


def _cached(path: Path, shown: str, settings: Settings) -> Optional[FileResult]:
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError:
        return None
    if data is None:
        return None
    return cache.load(Path(settings.cache_dir or "."), cache.entry_key(shown, data, settings))


def _run_uncached(files: Sequence[tuple[Path, str]], settings: Settings, jobs: int) -> list[FileResult]:
    work = [(path, shown, settings) for path, shown in files]
    if jobs > 1 and len(work) > 2:
        chunk = max(1, len(work) // (jobs * 8))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(_worker, work, chunksize=chunk))
    return [_worker(item) for item in work]


def collect_files(paths: Sequence[Path], config: LintConfig) -> list[tuple[Path, str]]:
    """Return the files to lint with the names to show for them."""
    found = discover(
        paths,
        root=config.root,
        exclude=[*config.exclude, *config.extend_exclude],
        respect_gitignore=config.respect_gitignore,
    )
    return [(path, display_path(path)) for path in found]


def default_jobs() -> int:
    """Return the default worker count: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def lint_paths(paths: Sequence[Path], config: LintConfig, *, fix: bool = False, unsafe_fixes: bool = False,
               jobs: int = 1, cache_dir: Optional[Path] = None) -> tuple[LintSummary, list[FileResult], dict[str, Path]]:
    """Lint files and folders; return the summary, per-file results and each shown name's path."""
    settings = settings_from(config, fix=fix, unsafe_fixes=unsafe_fixes, cache_dir=cache_dir)
    files = collect_files(paths, config)
    results = run_files(files, settings, jobs)
    summary = LintSummary(findings=settle(results), files_checked=len(results))
    summary.fixed = sum(r.fixed for r in results)
    summary.internal_errors = sum(1 for r in results if r.internal_error)
    return summary, results, {shown: path for path, shown in files}

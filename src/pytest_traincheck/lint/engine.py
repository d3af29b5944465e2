"""The static engine's orchestration: find files, answer from the cache, farm out the rest, settle.

The per-file analysis (libcst, the rules) lives in ``analysis`` and is imported
only when some file is not in the cache: a warm run never loads the parser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from pytest_traincheck.config import LintConfig
from pytest_traincheck.lint.findings import Finding, LintSummary, sorted_findings
from pytest_traincheck.lint import cache
from pytest_traincheck.lint import manifest
from pytest_traincheck.lint.discovery import PathError, discover, display_path
from pytest_traincheck.lint.project import Condition, FileFacts, ProjectFacts

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.lint.rule import Rule


# Beyond this a file is not linted (generated code?); it is never read whole to find that out.
MAX_FILE_BYTES = 2 * 1024 * 1024


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
        """Return the enabled rule classes (this imports libcst and every rule)."""
        from pytest_traincheck.lint.registry import all_rules

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


def syntax_finding(path: str, line: int, column: int, message: str) -> Finding:
    """Return a TRN000 finding: the file could not be read, decoded or parsed."""
    return Finding(path, max(line, 1), max(column, 1), max(line, 1), max(column, 1), "TRN000", message)


def lint_bytes(path: str, data: bytes, settings: Settings) -> FileResult:
    """Lint one file's bytes, applying fixes first when ``settings.fix`` is on."""
    from pytest_traincheck.lint.notebook import is_notebook

    if is_notebook(path):
        from pytest_traincheck.lint.notebook import lint_notebook

        return lint_notebook(path, data, settings)
    from pytest_traincheck.lint.analysis import lint_bytes as analyse_and_fix

    return analyse_and_fix(path, data, settings)


def lint_file(path: Path, shown: str, settings: Settings, *, look_up: bool = True) -> FileResult:
    """Read and lint one file; unreadable files become TRN000 findings.

    With a cache, the result is stored; ``look_up=False`` skips reading the cache
    (for files the caller already found missing from it).
    """
    if not path.is_file():  # a FIFO would block forever; a folder named x.py cannot be read
        return FileResult(shown, findings=[syntax_finding(shown, 1, 1, "not a regular file; not linted")])
    try:
        data = read_limited(path)
    except OSError as exc:
        return FileResult(shown, findings=[syntax_finding(shown, 1, 1, f"cannot read file: {exc.strerror}")])
    if len(data) > MAX_FILE_BYTES:
        return lint_bytes(shown, data, settings)  # reported as too large, from its first bytes only
    if settings.cache_dir is None or settings.fix:
        return lint_bytes(shown, data, settings)
    key = cache.entry_key(shown, data, settings)
    cached = cache.load(Path(settings.cache_dir), key) if look_up else None
    if cached is not None:
        return cached
    return _lint_and_store(shown, data, key, settings)


def read_limited(path: Path) -> bytes:
    """Read ``path``, but no more than one byte past ``MAX_FILE_BYTES`` (a huge sparse file stays cheap)."""
    with open(path, "rb") as handle:
        return handle.read(MAX_FILE_BYTES + 1)


def _lint_and_store(shown: str, data: bytes, key: str, settings: Settings) -> FileResult:
    result = lint_bytes(shown, data, settings)
    if not result.internal_error:
        cache.store(Path(settings.cache_dir), key, result)
    return result


def _worker(args: tuple[Path, str, Settings]) -> FileResult:
    path, shown, settings = args
    return lint_file(path, shown, settings, look_up=False)


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
    codes = tuple(code for code, default_on in manifest.rule_defaults().items() if config.enabled(code, default_on))
    return Settings(codes, dict(config.per_file_ignores), fix, unsafe_fixes, config.torch_version,
                    str(config.root), str(cache_dir) if cache_dir is not None else None)


def run_files(
    files: Sequence[tuple[Path, str]], settings: Settings, jobs: int = 1, isolate: bool = False
) -> list[FileResult]:
    """Lint ``(path, shown name)`` pairs, in worker processes when it pays off.

    ``isolate``: never parse in this process, even for one job or one file, so that a native
    crash of the parser costs its file, not the run (the command line; not the in-memory API).
    """
    results: dict[int, FileResult] = {}
    if settings.cache_dir is not None and not settings.fix:
        # Answer cache hits here: a warm run then starts no worker process at all, and the
        # workers lint (and store) only the misses without looking them up again.
        for index, (path, shown) in enumerate(files):
            hit = _cached(path, shown, settings)
            if hit is not None:
                results[index] = hit
    misses = [i for i in range(len(files)) if i not in results]
    for index, result in zip(misses, _run_uncached([files[i] for i in misses], settings, jobs, isolate)):
        results[index] = result
    return [results[i] for i in range(len(files))]


def _cached(path: Path, shown: str, settings: Settings) -> Optional[FileResult]:
    try:
        data = read_limited(path) if path.is_file() else None
    except OSError:
        return None
    if data is None or len(data) > MAX_FILE_BYTES:
        return None
    return cache.load(Path(settings.cache_dir or "."), cache.entry_key(shown, data, settings))


def _run_uncached(files: Sequence[tuple[Path, str]], settings: Settings, jobs: int,
                  isolate: bool = False) -> list[FileResult]:
    work = [(path, shown, settings) for path, shown in files]
    jobs = min(jobs, default_jobs())  # more workers than usable CPUs only add memory and switching
    if jobs > 1 and len(work) > 2:
        return _run_pool(work, jobs)
    if isolate and work:  # one worker process: the pool survives a parser that kills it
        return _run_pool(work, 1)
    return [_worker(item) for item in work]


def _run_pool(work: list[tuple[Path, str, Settings]], jobs: int) -> list[FileResult]:
    """Lint in worker processes; a worker that dies (a native crash) costs only the file it was on.

    When the pool breaks, the files it had not finished are linted again one at a time in a
    single-worker pool, so the next death names its file; that file becomes one TRN000 finding
    and the rest go back to a full pool.
    """
    from concurrent.futures import ProcessPoolExecutor  # not needed by a run answered from the cache
    from concurrent.futures.process import BrokenProcessPool

    results: dict[int, FileResult] = {}
    pending = list(range(len(work)))
    suspect = False  # after a crash: one file at a time until the culprit is found
    while pending:
        workers, chunk = (1, 1) if suspect else (jobs, max(1, len(pending) // (jobs * 8)))
        batches = [pending[i:i + chunk] for i in range(0, len(pending), chunk)]
        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [(batch, pool.submit(_worker_batch, [work[i] for i in batch])) for batch in batches]
                for batch, future in futures:
                    try:
                        for index, result in zip(batch, future.result()):
                            results[index] = result
                    except BrokenProcessPool:
                        if suspect:  # one worker, one file, in order: this file killed it
                            path, shown, _ = work[batch[0]]
                            results[batch[0]] = FileResult(shown, findings=[syntax_finding(
                                shown, 1, 1, "the parser crashed on this file (its worker process died); not linted")])
                            suspect = False
                        else:
                            suspect = True
                        raise
        except BrokenProcessPool:
            pass
        pending = [i for i in pending if i not in results]
    return [results[i] for i in range(len(work))]


def _worker_batch(items: list[tuple[Path, str, Settings]]) -> list[FileResult]:
    return [_worker(item) for item in items]


def collect_files(paths: Sequence[Path], config: LintConfig,
                  problems: Optional[list[tuple[Path, str]]] = None) -> list[tuple[Path, str]]:
    """Return the files to lint with the names to show for them.

    With ``problems``, missing paths and unreadable folders are recorded there instead of stopping
    the run, unless no given path exists at all (then ``PathError`` is raised as without it).
    """
    found = list(discover(
        paths,
        root=config.root,
        exclude=[*config.exclude, *config.extend_exclude],
        respect_gitignore=config.respect_gitignore,
        problems=problems,
    ))
    if problems and all(not p.exists() and not p.is_symlink() for p in paths):
        raise PathError(f"{problems[0][0]}: {problems[0][1]}")
    return [(path, display_path(path)) for path in found]


def default_jobs() -> int:
    """Return the default worker count: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def lint_paths(paths: Sequence[Path], config: LintConfig, *, fix: bool = False, unsafe_fixes: bool = False,
               jobs: int = 1, cache_dir: Optional[Path] = None,
               isolate: bool = False) -> tuple[LintSummary, list[FileResult], dict[str, Path]]:
    """Lint files and folders; return the summary, per-file results and each shown name's path."""
    settings = settings_from(config, fix=fix, unsafe_fixes=unsafe_fixes, cache_dir=cache_dir)
    problems: list[tuple[Path, str]] = []
    files = collect_files(paths, config, problems)
    results = run_files(files, settings, jobs, isolate)
    for path, why in problems:  # a missing path or an unreadable folder: reported, the rest still linted
        shown = display_path(path)
        results.append(FileResult(shown, findings=[syntax_finding(shown, 1, 1, why)]))
    summary = LintSummary(findings=settle(results), files_checked=len(results))
    summary.fixed = sum(r.fixed for r in results)
    summary.internal_errors = sum(1 for r in results if r.internal_error)
    return summary, results, {shown: path for path, shown in files}

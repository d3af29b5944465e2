"""Per-file results cached by content hash, tool version and settings.

An entry holds a file's findings, its deferred (cross-file) findings and its
facts, so the project pass stays correct when only another file changed.
Entries are written atomically, so concurrent runs never see a torn entry; an
entry that cannot be read is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from pytest_traincheck import __version__
from pytest_traincheck.lint.findings import Finding
from pytest_traincheck.lint.project import CallSite, ClassFacts, Condition, FileFacts

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.lint.engine import FileResult, Settings

CACHE_DIR_NAME = ".traincheck_cache"
# Bumped whenever an entry's layout changes (2: facts hold functions and call sites; 3: classes say whether
# they depend on train/eval mode, call sites carry the caller's mode switches; 4: facts hold star imports;
# 5: classes say whether they set a loader's order; 6: facts hold the functions that save on every rank),
# so that entries written by an older layout are never read back.
SCHEMA = "6"


@lru_cache(maxsize=1)
def installed_torch() -> str:
    """Return the installed torch's version, read from its metadata (torch is not imported)."""
    # The first `torch-<version>.dist-info` on sys.path is the distribution importlib.metadata
    # would find; listing the folders costs a millisecond where importing importlib.metadata
    # costs a sixth of a warm run. Anything unusual (an editable build) takes the slow path.
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("torch-") and name.endswith(".dist-info"):
                return name[len("torch-"):-len(".dist-info")]
    import importlib.metadata

    try:
        return importlib.metadata.version("torch")
    except Exception:  # not installed, or broken metadata
        return "none"


def entry_key(shown: str, data: bytes, settings: "Settings") -> str:
    """Return the cache key of one file under these settings.

    TRN208 looks names missing from its shipped table up in the installed torch, so with it
    enabled the key holds that torch's version: upgrading torch invalidates those entries.
    """
    digest = hashlib.sha256()
    torch = installed_torch() if "TRN208" in settings.codes else ""
    for part in (__version__, SCHEMA, shown, repr(settings.signature()), torch):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def _entry_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / __version__ / key[:2] / f"{key}.json"


class BadEntry(ValueError):
    """A cache entry that is valid JSON of the wrong shape."""


# The field types of the cached dataclasses, as their annotations spell them.
_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: type(v) is int,
    "bool": lambda v: type(v) is bool,
    "Optional[str]": lambda v: v is None or isinstance(v, str),
    "Optional[int]": lambda v: v is None or type(v) is int,
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}
_T = TypeVar("_T")


def _build(cls: type[_T], data: object) -> _T:
    """Rebuild a dataclass from a JSON object, checking every field's type."""
    if not isinstance(data, dict):
        raise BadEntry(f"{cls.__name__}: not an object")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for name, value in data.items():
        spec = known.get(name)
        if spec is None or not _CHECKS[str(spec.type)](value):
            raise BadEntry(f"{cls.__name__}.{name}: wrong type")
    return cls(**data)


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise BadEntry("not a list")
    return value


def decode(raw: object) -> "FileResult":
    """Rebuild a result from an entry's JSON, refusing any part of the wrong shape."""
    from pytest_traincheck.lint.engine import FileResult

    if not isinstance(raw, dict) or set(raw) != {"path", "findings", "deferred", "facts", "internal_error"}:
        raise BadEntry("not an entry")
    path, facts, internal_error = raw["path"], raw["facts"], raw["internal_error"]
    if not isinstance(path, str) or not isinstance(facts, dict) or type(internal_error) is not bool:
        raise BadEntry("wrong entry fields")
    findings = [_build(Finding, f) for f in _list(raw["findings"])]
    deferred = []
    for pair in _list(raw["deferred"]):
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadEntry("deferred: not a pair")
        deferred.append((_build(Finding, pair[0]), _build(Condition, pair[1])))
    if set(facts) != {"classes", "functions", "calls", "stars", "saves"} or not isinstance(facts["classes"], dict) \
            or not _CHECKS["list[str]"](facts["functions"]) or not _CHECKS["list[str]"](facts["stars"]) \
            or not _CHECKS["list[str]"](facts["saves"]):
        raise BadEntry("facts: wrong fields")
    classes = {}
    for name, values in facts["classes"].items():
        classes[name] = _build(ClassFacts, values)
    calls = [_call_site(site) for site in _list(facts["calls"])]
    if any(f.path != path for f in findings) or any(f.path != path for f, _ in deferred):
        raise BadEntry("a finding of another file")
    return FileResult(path=path, findings=findings, deferred=deferred,
                      facts=FileFacts(classes, list(facts["functions"]), calls, list(facts["stars"]),
                                      list(facts["saves"])), internal_error=internal_error)


def _call_site(site: object) -> CallSite:
    """Check one recorded call: [callee as written, qualified callee, [[position or keyword, passed], ...]]."""
    if not isinstance(site, list) or len(site) != 3 or not isinstance(site[0], str) or not isinstance(site[1], str):
        raise BadEntry("calls: not a call site")
    args = _list(site[2])
    for arg in args:
        if not isinstance(arg, list) or len(arg) != 2 or not isinstance(arg[1], str) \
                or not (isinstance(arg[0], str) or type(arg[0]) is int):
            raise BadEntry("calls: not an argument")
    return site[0], site[1], args


def load(cache_dir: Path, key: str) -> Optional["FileResult"]:
    """Return the cached result, or None when missing, unreadable or of the wrong shape (a miss)."""
    try:
        fd = os.open(_entry_path(cache_dir, key), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "r", encoding="utf-8") as handle:
            return decode(json.loads(handle.read()))
    except (OSError, ValueError, KeyError, TypeError, RecursionError, MemoryError):
        return None


def store(cache_dir: Path, key: str, result: "FileResult") -> None:
    """Write one entry atomically; a cache that cannot be written is silently skipped."""
    payload = {
        "path": result.path,
        "findings": [f.to_dict() for f in result.findings],
        "deferred": [(f.to_dict(), vars(c)) for f, c in result.deferred],
        "facts": result.facts.to_dict(),
        "internal_error": result.internal_error,
    }
    target = _entry_path(cache_dir, key)
    # The folders below the cache folder are ours: one that is a link was planted, so write nothing.
    for folder in (target.parent.parent, target.parent):
        if os.path.islink(folder):
            return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(target.parent.parent) or os.path.islink(target.parent):
            return
        fd, tmp = tempfile.mkstemp(dir=str(target.parent), suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        os.replace(tmp, target)
    except OSError:
        pass
    gitignore = cache_dir / ".gitignore"
    if not os.path.lexists(gitignore):  # a dangling link counts as present: never create its target
        try:
            fd = os.open(gitignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("# Created by traincheck.\n*\n")
        except OSError:
            pass

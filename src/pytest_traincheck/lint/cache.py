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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pytest_traincheck import __version__
from pytest_traincheck.lint.findings import Finding
from pytest_traincheck.lint.project import Condition, FileFacts

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.lint.engine import FileResult, Settings

CACHE_DIR_NAME = ".traincheck_cache"


def entry_key(shown: str, data: bytes, settings: "Settings") -> str:
    """Return the cache key of one file under these settings."""
    digest = hashlib.sha256()
    for part in (__version__, shown, repr(settings.signature())):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def _entry_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / __version__ / key[:2] / f"{key}.json"


def load(cache_dir: Path, key: str) -> Optional["FileResult"]:
    """Return the cached result, or None when missing or unreadable."""
    from pytest_traincheck.lint.engine import FileResult

    try:
        raw = json.loads(_entry_path(cache_dir, key).read_text(encoding="utf-8"))
        return FileResult(
            path=raw["path"],
            findings=[Finding(**f) for f in raw["findings"]],
            deferred=[(Finding(**f), Condition(**c)) for f, c in raw["deferred"]],
            facts=FileFacts.from_dict(raw["facts"]),
            internal_error=raw["internal_error"],
        )
    except (OSError, ValueError, KeyError, TypeError):
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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=str(target.parent), suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        os.replace(tmp, target)
    except OSError:
        pass
    gitignore = cache_dir / ".gitignore"
    if not gitignore.exists():
        try:
            gitignore.write_text("# Created by traincheck.\n*\n", encoding="utf-8")
        except OSError:
            pass

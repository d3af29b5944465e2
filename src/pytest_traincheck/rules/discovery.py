"""Find the Python files to lint: folders walked, excludes and .gitignore respected."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Iterator, Optional, Sequence


class PathError(Exception):
    """A path given on the command line does not exist."""


class GitIgnore:
    """The patterns of the .gitignore files met while walking (a practical subset of git's rules)."""

    def __init__(self) -> None:
        self._rules: list[tuple[Path, re.Pattern[str], bool, bool]] = []  # base, regex, negated, dir_only

    def add_file(self, path: Path) -> None:
        """Read one .gitignore; its patterns apply below its folder."""
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return
        for raw in lines:
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.strip("/") if dir_only else line
            anchored = "/" in line.rstrip("/")
            line = line.lstrip("/")
            regex = _glob_to_regex(line, anchored)
            self._rules.append((path.parent.resolve(), regex, negated, dir_only))

    def ignored(self, path: Path, is_dir: bool) -> bool:
        """True if the last matching pattern ignores ``path``."""
        verdict = False
        resolved = path.resolve() if path.is_absolute() else path.absolute()
        for base, regex, negated, dir_only in self._rules:
            if dir_only and not is_dir:
                continue
            try:
                rel = resolved.relative_to(base).as_posix()
            except ValueError:
                continue
            if regex.fullmatch(rel):
                verdict = not negated
        return verdict


def _glob_to_regex(pattern: str, anchored: bool) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    body = "".join(out)
    return re.compile(body if anchored else f"(?:.*/)?{body}")


def _matches_any(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    name = path.name
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = path.as_posix()
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
            return True
    return False


def discover(
    paths: Sequence[Path],
    *,
    root: Path,
    exclude: Sequence[str],
    respect_gitignore: bool = True,
) -> Iterator[Path]:
    """Yield the Python files under ``paths``; files named explicitly are always yielded."""
    seen: set[Path] = set()
    for given in paths:
        if not given.exists() and not given.is_symlink():
            raise PathError(f"{given}: no such file or directory")
        if given.is_file() or not given.is_dir():
            if given.resolve() not in seen:
                seen.add(given.resolve())
                yield given
            continue
        yield from _walk(given, root, exclude, respect_gitignore, seen)


def _walk(top: Path, root: Path, exclude: Sequence[str], respect_gitignore: bool, seen: set[Path]) -> Iterator[Path]:
    gitignore = GitIgnore()
    if respect_gitignore:
        for parent in reversed([top.resolve(), *top.resolve().parents]):
            if (parent / ".gitignore").is_file():
                gitignore.add_file(parent / ".gitignore")
    # os.walk does not follow symlinked folders, so a symlink loop cannot trap it.
    for folder, dirs, files in os.walk(top, onerror=None):
        here = Path(folder)
        if respect_gitignore and here != top and (here / ".gitignore").is_file():
            gitignore.add_file(here / ".gitignore")
        keep = []
        for name in sorted(dirs):
            child = here / name
            if _matches_any(child, root, exclude) or (respect_gitignore and gitignore.ignored(child, True)):
                continue
            keep.append(name)
        dirs[:] = keep
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            child = here / name
            if not child.is_file():
                continue  # dangling symlink, FIFO, socket: nothing to lint, and reading a FIFO would hang
            if _matches_any(child, root, exclude) or (respect_gitignore and gitignore.ignored(child, False)):
                continue
            resolved = child.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield child


def display_path(path: Path, cwd: Optional[Path] = None) -> str:
    """Return ``path`` relative to the working folder when it lies below it."""
    cwd = cwd or Path.cwd()
    # absolute(), not resolve(): a symlinked file is reported under the name it was given.
    try:
        return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(cwd))).as_posix()
    except ValueError:
        return path.as_posix()

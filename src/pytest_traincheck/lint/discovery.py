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

    def ignored(self, real: Path, is_dir: bool) -> bool:
        """True if the last matching pattern ignores ``real`` (a resolved path)."""
        verdict = False
        for base, regex, negated, dir_only in self._rules:
            if dir_only and not is_dir:
                continue
            try:
                rel = real.relative_to(base).as_posix()
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


class _Excludes:
    """The exclude patterns, matched against a file's name and its path relative to the root."""

    def __init__(self, root: Path, patterns: Sequence[str]) -> None:
        self.root = Path(os.path.realpath(root))
        stripped = [p.rstrip("/") for p in patterns]
        self._globs = [re.compile(fnmatch.translate(p)) for p in stripped]
        self._prefixes = tuple(p + "/" for p in stripped)

    def match(self, real: Path) -> bool:
        """True if the resolved path ``real`` is excluded."""
        try:
            rel = real.relative_to(self.root).as_posix()
        except ValueError:
            rel = real.as_posix()
        name = real.name
        return rel.startswith(self._prefixes) or any(g.match(name) or g.match(rel) for g in self._globs)


def discover(
    paths: Sequence[Path],
    *,
    root: Path,
    exclude: Sequence[str],
    respect_gitignore: bool = True,
    problems: Optional[list[tuple[Path, str]]] = None,
) -> Iterator[Path]:
    """Yield the Python files and notebooks under ``paths``; files named explicitly are always yielded.

    With ``problems``, a missing path or a folder that cannot be listed is recorded there as
    (path, why) and the others are still walked; without it, a missing path raises ``PathError``.
    """
    seen: set[Path] = set()
    for given in paths:
        if not given.exists() and not given.is_symlink():
            if problems is None:
                raise PathError(f"{given}: no such file or directory")
            problems.append((given, "no such file or directory"))
            continue
        if given.is_file() or not given.is_dir():
            if given.resolve() not in seen:
                seen.add(given.resolve())
                yield given
            continue
        yield from _walk(given, root, exclude, respect_gitignore, seen, problems)


def _walk(top: Path, root: Path, exclude: Sequence[str], respect_gitignore: bool, seen: set[Path],
          problems: Optional[list[tuple[Path, str]]] = None) -> Iterator[Path]:
    excludes = _Excludes(root, exclude)
    gitignore = GitIgnore()
    if respect_gitignore:
        for parent in reversed([top.resolve(), *top.resolve().parents]):
            if (parent / ".gitignore").is_file():
                gitignore.add_file(parent / ".gitignore")

    def skipped(real: Path, is_dir: bool) -> bool:
        return excludes.match(real) or (respect_gitignore and gitignore.ignored(real, is_dir))

    # os.walk does not follow symlinked folders, so a symlink loop cannot trap it. Each folder
    # is resolved once; its entries are resolved only when they are symlinks themselves.
    def unreadable(error: OSError) -> None:
        if problems is not None:
            problems.append((Path(error.filename), f"cannot read folder: {error.strerror}"))

    for folder, dirs, files in os.walk(top, onerror=unreadable):
        here = Path(folder)
        real_here = Path(os.path.realpath(folder))
        if respect_gitignore and here != top and (here / ".gitignore").is_file():
            gitignore.add_file(here / ".gitignore")
        dirs[:] = [name for name in sorted(dirs) if not skipped(_real(real_here, folder, name), True)]
        for name in sorted(files):
            if not name.endswith((".py", ".ipynb")):
                continue
            child = here / name
            if not child.is_file():
                continue  # dangling symlink, FIFO, socket: nothing to lint, and reading a FIFO would hang
            real = _real(real_here, folder, name)
            if skipped(real, False) or real in seen:
                continue
            seen.add(real)
            yield child


def _real(real_folder: Path, folder: str, name: str) -> Path:
    """Return the resolved path of ``folder/name``, given the folder's resolved path."""
    entry = os.path.join(folder, name)
    return Path(os.path.realpath(entry)) if os.path.islink(entry) else real_folder / name


def display_path(path: Path, cwd: Optional[Path] = None) -> str:
    """Return ``path`` relative to the working folder when it lies below it."""
    cwd = cwd or Path.cwd()
    # absolute(), not resolve(): a symlinked file is reported under the name it was given.
    try:
        return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(cwd))).as_posix()
    except ValueError:
        return path.as_posix()

"""Apply rule fixes to a tree; keep the result only if it re-parses; write files atomically."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

import libcst as cst

from pytest_traincheck.lint.rule import FixFunc, RawFinding

MAX_ROUNDS = 10


class _Replacer(cst.CSTTransformer):
    """Replace the reported nodes (matched by identity) with their fixes."""

    def __init__(self, fixes: dict[int, FixFunc]) -> None:
        super().__init__()
        self.fixes = fixes

    def on_leave(
        self, original_node: cst.CSTNode, updated_node: cst.CSTNode
    ) -> Union[cst.CSTNode, cst.RemovalSentinel, cst.FlattenSentinel[cst.CSTNode]]:
        fix = self.fixes.get(id(original_node))
        if fix is None:
            return updated_node
        return fix(updated_node)


def apply(module: cst.Module, findings: Sequence[RawFinding]) -> Optional[str]:
    """Return the fixed source, or None if the fixes do not produce valid code."""
    fixes: dict[int, FixFunc] = {}
    for raw in findings:
        if raw.fix is not None:
            fixes.setdefault(id(raw.node), raw.fix)
    try:
        new_module = module.visit(_Replacer(fixes))
        code = new_module.code
        cst.parse_module(code)  # a fix must leave code that parses
        compile(code, "<fixed>", "exec", dont_inherit=True)
    except Exception:
        return None
    return code


def write_atomic(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a torn one.

    A symlink is followed: the file it points to is replaced, the link stays. A file without
    write permission is refused (``PermissionError``), even for root.
    """
    data = text.encode(encoding)
    path = Path(os.path.realpath(path))
    mode = None
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    if mode is not None and (not mode & 0o222 or not os.access(path, os.W_OK)):
        raise PermissionError(errno.EACCES, "read-only file; not fixed", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".traincheck.tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

"""A flake8 plugin that reports traincheck's lint findings (``flake8 --select TRN``).

Registered under the ``flake8.extension`` entry point group with the code
prefix ``TRN``. The rules that run are the ones ``traincheck lint`` would run
for the file: the defaults, or the nearest ``[tool.traincheck]`` settings
(``select``, ``extend-select``, ``ignore``, ``per-file-ignores``). flake8's own
``--select``/``--extend-ignore`` and ``# noqa`` then filter the results as usual.
"""

from __future__ import annotations

import ast
import tokenize
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Iterator, Optional, Sequence

from pytest_traincheck import __version__


@lru_cache(maxsize=64)
def _settings_for(folder: str) -> object:
    """Return the engine settings for files in ``folder`` (the defaults if the config is broken)."""
    from pytest_traincheck.config import ConfigError, LintConfig, load_config
    from pytest_traincheck.lint import engine

    try:
        config = load_config(None, start=Path(folder))
    except ConfigError:
        config = LintConfig()  # `traincheck lint` reports the broken file; flake8 keeps going
    return engine.settings_from(config)


def _encode(text: str) -> bytes:
    """Encode the decoded lines back to the bytes their coding declaration promises."""
    data = text.encode("utf-8")
    try:
        encoding, _ = tokenize.detect_encoding(BytesIO(data).readline)
    except SyntaxError:
        return data
    if encoding in ("utf-8", "utf-8-sig"):
        return data
    try:
        return text.encode(encoding, errors="replace")
    except LookupError:
        return data


class TraincheckChecker:
    """Run traincheck's lint rules on one file for flake8."""

    name = "pytest-traincheck"
    version = __version__

    def __init__(self, tree: ast.AST, lines: Sequence[str], filename: str = "stdin") -> None:
        self.tree = tree  # unused: flake8 needs the parameter to call this an AST plugin
        self.lines = lines
        self.filename = filename

    def _shown(self) -> str:
        if self.filename in ("stdin", "-", ""):
            return "stdin.py"
        from pytest_traincheck.lint.discovery import display_path

        return display_path(Path(self.filename))

    def _folder(self) -> str:
        path: Optional[Path] = None if self.filename in ("stdin", "-", "") else Path(self.filename)
        return str((path.parent if path is not None else Path.cwd()).resolve())

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        """Yield ``(line, column, "TRNxxx message", type)``; flake8's columns are 0-based."""
        from pytest_traincheck.lint import engine

        settings = _settings_for(self._folder())
        result = engine.lint_bytes(self._shown(), _encode("".join(self.lines)), settings)  # type: ignore[arg-type]
        for finding in engine.settle([result]):
            yield finding.line, finding.column - 1, f"{finding.code} {finding.message}", type(self)

"""``[tool.traincheck]`` and command-line options, merged into one object."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from pytest_traincheck import catalog
from pytest_traincheck.versions import DeclarationError, declared_torch_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(Exception):
    """A configuration problem, reported as one line and exit code 2."""


DEFAULT_EXCLUDES = (
    ".git", ".hg", ".svn", ".bzr", ".venv", "venv", ".env", "env", ".tox", ".nox", ".eggs",
    "build", "dist", "__pycache__", "node_modules", "site-packages", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".traincheck_cache", "__pypackages__", ".ipynb_checkpoints",
)


@dataclass
class LintConfig:
    """Every setting of ``traincheck lint``; the file's values, then the flags'."""

    select: Optional[list[str]] = None  # None: the rules that are on by default
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDES))
    extend_exclude: list[str] = field(default_factory=list)
    respect_gitignore: bool = True
    torch_version: Optional[str] = None  # the torch the project targets, for TRN502
    source: Optional[Path] = None  # the file the settings came from
    root: Path = field(default_factory=Path.cwd)  # patterns are relative to this folder

    def enabled(self, code: str, default_on: bool) -> bool:
        """Decide whether ``code`` runs: the most specific selector wins, ignore on ties."""
        return catalog.is_selected(code, default_on, self.select, self.ignore, self.extend_select)

    def cache_key(self) -> str:
        """Return a string that changes whenever a setting that affects findings changes."""
        return repr((self.select, sorted(self.ignore), sorted(self.extend_select),
                     sorted(self.per_file_ignores.items()), self.torch_version))


# key in the file -> (attribute, expected type)
_KEYS: dict[str, tuple[str, type]] = {
    "select": ("select", list),
    "ignore": ("ignore", list),
    "extend-select": ("extend_select", list),
    "per-file-ignores": ("per_file_ignores", dict),
    "exclude": ("exclude", list),
    "extend-exclude": ("extend_exclude", list),
    "respect-gitignore": ("respect_gitignore", bool),
    "torch-version": ("torch_version", str),
}
_CODE_KEYS = {"select", "ignore", "extend-select"}
# Sub-tables that belong to other parts of traincheck.
_SUBTABLES = {"sanity"}


def find_config_file(start: Path) -> Optional[Path]:
    """Return the nearest traincheck.toml, or pyproject.toml with [tool.traincheck], above ``start``."""
    start = start.resolve()
    for folder in [start, *start.parents] if start.is_dir() else [start.parent, *start.parent.parents]:
        candidate = folder / "traincheck.toml"
        if candidate.is_file():
            return candidate
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and _has_tool_table(candidate):
            return candidate
    return None


def _has_tool_table(path: Path) -> bool:
    try:
        return "traincheck" in _read_toml(path).get("tool", {})
    except ConfigError:
        return True  # let the caller report the broken file


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def read_table(path: Path) -> dict[str, Any]:
    """Return the traincheck table of a config file (``[tool.traincheck]`` or the whole traincheck.toml)."""
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("traincheck", {})
    else:
        table = data.get("tool", {}).get("traincheck", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.traincheck] must be a table")
    return table


def _check_codes(where: str, values: Any) -> list[str]:
    try:
        return catalog.parse_codes(values, where)
    except catalog.SelectorError as exc:
        raise ConfigError(str(exc)) from None


def _convert(path: Path, key: str, value: Any) -> Any:
    attr, expected = _KEYS[key]
    where = f"{path}: [tool.traincheck] {key}"
    if not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    if key in _CODE_KEYS:
        return _check_codes(where, value)
    if key == "per-file-ignores":
        return {str(pattern): _check_codes(f"{where} {pattern!r}", codes if isinstance(codes, list) else [codes])
                for pattern, codes in value.items()}
    if expected is list:
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return list(value)
    return value


def load_config(path: Optional[Path], start: Optional[Path] = None) -> LintConfig:
    """Load settings from ``path`` (or the nearest config file above ``start``)."""
    if path is None:
        path = find_config_file(start or Path.cwd())
    if path is None:
        return LintConfig(root=(start or Path.cwd()).resolve() if (start and start.is_dir()) else Path.cwd())
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    table = read_table(path)
    config = LintConfig(source=path, root=path.resolve().parent)
    if path.name == "pyproject.toml":
        try:
            config.torch_version = declared_torch_version(path)
        except DeclarationError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for key, value in table.items():
        if key in _SUBTABLES:
            continue
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"{path}: [tool.traincheck] unknown key {key!r} (known: {known})")
        setattr(config, _KEYS[key][0], _convert(path, key, value))
    return config


def override(config: LintConfig, **flags: Any) -> LintConfig:
    """Return ``config`` with every command-line flag that was given applied on top."""
    names = {f.name for f in fields(LintConfig)}
    given = {k: v for k, v in flags.items() if k in names and v is not None}
    for key in ("select", "ignore", "extend_select"):
        if key in given:
            given[key] = _check_codes(f"--{key.replace('_', '-')}", given[key])
    # extend-* flags add to the file's lists; the others replace them.
    for key in ("extend_select", "extend_exclude"):
        if key in given:
            given[key] = [*getattr(config, key), *given[key]]
    return replace(config, **given)


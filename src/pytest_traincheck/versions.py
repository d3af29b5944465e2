"""Torch version arithmetic: the torch a project targets, read from its declared dependencies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union


def version_tuple(text: str) -> tuple[int, ...]:
    """``"2.5.1+cu121"`` -> ``(2, 5, 1)``; stops at the first non-numeric part."""
    parts: list[int] = []
    for piece in re.split(r"[.+]", text.strip()):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.group() != piece:
            break
    return tuple(parts)


def older_than(version: Optional[str], reference: str) -> bool:
    """True if ``version`` is known and older than ``reference`` (``"2.5.1"`` < ``"2.6"``)."""
    if not version:
        return False
    mine = version_tuple(version)
    return bool(mine) and mine < version_tuple(reference)


def at_least(version: Optional[str], reference: str) -> bool:
    """True if ``version`` is unknown (the current torch) or at least ``reference``."""
    return not older_than(version, reference)


_CLAUSE = re.compile(r"^\s*(===|==|!=|~=|<=|>=|<|>)\s*([0-9][0-9A-Za-z.*+!-]*)\s*$")


def _satisfies(version: tuple[int, ...], op: str, target: str) -> bool:
    wildcard = target.endswith(".*")
    want = version_tuple(target[:-2] if wildcard else target)
    if wildcard and op in ("==", "!="):
        hit = version[: len(want)] == want
        return hit if op == "==" else not hit
    padded = max(len(version), len(want))
    mine, theirs = version + (0,) * (padded - len(version)), want + (0,) * (padded - len(want))
    if op == "~=":
        return mine >= theirs and version[: max(len(want) - 1, 1)] == want[: max(len(want) - 1, 1)]
    return {"==": mine == theirs, "===": mine == theirs, "!=": mine != theirs, "<=": mine <= theirs,
            ">=": mine >= theirs, "<": mine < theirs, ">": mine > theirs}[op]


def newest_allowed(specifier: str) -> Optional[str]:
    """Return the newest torch release a PEP 440 specifier allows (``"<2.6"`` -> ``"2.5"``), None if unbounded."""
    clauses = []
    for raw in specifier.split(","):
        if not raw.strip():
            continue
        match = _CLAUSE.match(raw)
        if match is None:
            return None
        clauses.append((match.group(1), match.group(2)))
    if not clauses:
        return None
    candidates = {(major, minor) for major in (1, 2, 3) for minor in range(0, 30)}
    candidates |= {version_tuple(t.rstrip(".*")) for _, t in clauses}
    allowed = sorted(v for v in candidates if v and all(_satisfies(v, op, t) for op, t in clauses))
    if not allowed or allowed[-1][1:2] == (29,):
        return None  # no upper bound below the next major release: whatever torch is current
    return ".".join(str(p) for p in allowed[-1])


_REQUIREMENT = re.compile(r"^\s*torch\s*(\[[^\]]*\])?\s*(\(?\s*([^;()]*)\)?)?\s*(;.*)?$", re.IGNORECASE)


class DeclarationError(ValueError):
    """A dependency declaration of the wrong type or form; the message names the key."""


def _expect(value: object, kind: type, key: str) -> None:
    if not isinstance(value, kind):
        raise DeclarationError(f"{key}: expected a {'table' if kind is dict else kind.__name__}, "
                               f"got {type(value).__name__} {value!r}")


def _torch_specifiers(data: dict) -> list[str]:  # type: ignore[type-arg]
    found: list[str] = []
    project = data.get("project", {}) if isinstance(data.get("project"), dict) else {}
    requirements = project.get("dependencies", []) or []
    _expect(requirements, list, "[project] dependencies")
    requirements = list(requirements)
    extras = project.get("optional-dependencies", {}) or {}
    _expect(extras, dict, "[project] optional-dependencies")
    for name, extra in extras.items():
        _expect(extra or [], list, f"[project.optional-dependencies] {name}")
        requirements.extend(extra or [])
    for requirement in requirements:
        match = _REQUIREMENT.match(str(requirement))
        if match and match.group(3) and match.group(3).strip():
            found.append(match.group(3).strip())
    poetry = data.get("tool", {}).get("poetry", {}) if isinstance(data.get("tool"), dict) else {}
    _expect(poetry, dict, "[tool.poetry]")
    _expect(poetry.get("group", {}), dict, "[tool.poetry] group")
    groups = [g.get("dependencies", {}) if isinstance(g, dict) else {} for g in poetry.get("group", {}).values()]
    for table in (poetry.get("dependencies", {}), *groups):
        spec = table.get("torch") if isinstance(table, dict) else None
        if isinstance(spec, dict):
            spec = spec.get("version")
        if isinstance(spec, str) and spec.strip() not in ("", "*"):
            try:
                found.append(_poetry_to_pep440(spec.strip()))
            except (IndexError, ValueError):
                raise DeclarationError(f"[tool.poetry] dependencies torch: not a version constraint: {spec!r}") \
                    from None
    return found


def _poetry_to_pep440(spec: str) -> str:
    if spec.startswith("^"):
        base = version_tuple(spec[1:]) or (0,)
        upper = (base[0] + 1,) if base[0] or len(base) < 2 else (0, base[1] + 1)
        return f">={spec[1:]},<{'.'.join(map(str, upper))}"
    if spec.startswith("~") and not spec.startswith("~="):
        base = version_tuple(spec[1:])
        upper = (base[0], base[1] + 1) if len(base) >= 2 else (base[0] + 1,)
        return f">={spec[1:]},<{'.'.join(map(str, upper))}"
    if spec[0].isdigit():
        return f"=={spec}"
    return spec


def declared_torch_version(pyproject_path: Union[str, Path]) -> Optional[str]:
    """Return the newest torch a project's ``pyproject.toml`` allows (``torch<2.6`` -> ``"2.5"``), else None.

    Reads ``[project] dependencies``, ``[project.optional-dependencies]`` and
    Poetry's dependency tables. None when the file is missing or unreadable,
    torch is not declared, or no declaration bounds it from above (the project
    then runs on the current torch). With several declarations, the lowest
    upper bound wins: some install of the project runs on it.
    """
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return None
    try:
        with open(pyproject_path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, ValueError):
        return None
    versions = [v for v in (newest_allowed(s) for s in _torch_specifiers(data)) if v]
    return min(versions, key=version_tuple) if versions else None



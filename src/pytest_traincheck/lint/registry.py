"""The one registry of lint rules, discovered from the modules of ``pytest_traincheck.rules`` (one rule per module)."""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from pytest_traincheck.lint.rule import Rule


@lru_cache(maxsize=1)
def all_rules() -> tuple[type[Rule], ...]:
    """Return every rule class, sorted by code."""
    package = importlib.import_module("pytest_traincheck.rules")
    found: dict[str, type[Rule]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"pytest_traincheck.rules.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Rule) and value is not Rule and value.CODE:
                if value.__module__ != module.__name__:
                    continue  # imported, not defined here
                if value.CODE in found and found[value.CODE] is not value:
                    raise RuntimeError(f"two rules share code {value.CODE}: {found[value.CODE].__name__}, {value.__name__}")
                found[value.CODE] = value
    return tuple(found[code] for code in sorted(found))


def rule_by_code(code: str) -> type[Rule]:
    """Return the rule class for ``code`` (KeyError if none)."""
    for rule in all_rules():
        if rule.CODE == code.upper():
            return rule
    raise KeyError(code)

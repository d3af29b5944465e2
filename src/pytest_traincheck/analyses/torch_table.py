"""Which torch names exist, decided without importing torch in the linting processes.

TRN208 checks names against the shipped table (``data/torch_names.json``). When the
installed torch is the table's release, or no torch is installed, the table decides
alone. When another release is installed, a name missing from the table becomes a
deferred finding, settled once per run by the parent process, which asks the installed
torch for its names in a short-lived child process: importing torch costs hundreds of
megabytes, which a worker per core would each pay for a single lookup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

__all__ = ["authoritative", "installed_has", "installed_version"]

# Run in a child process: the names an attribute lookup on each module finds (as
# scripts/gen_torch_names.py lists them), printed as JSON.
_DUMP = """
import importlib, json, pkgutil, sys
out = {}
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    names = set(dir(module)) | set(getattr(module, "__all__", ()))
    names.update(info.name for info in pkgutil.iter_modules(getattr(module, "__path__", [])))
    out[name] = sorted(names)
print(json.dumps(out))
"""
DUMP_TIMEOUT = 300.0  # seconds; a first torch import on a cold, loaded machine can take a minute


@lru_cache(maxsize=1)
def torch_names() -> dict[str, Any]:
    """Return the shipped table (read here too, so that settling a warm run does not load libcst)."""
    return json.loads((Path(__file__).with_name("data") / "torch_names.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def installed_version() -> Optional[str]:
    """Return the installed torch's release (``2.4.1``, local part dropped) from its metadata, or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version("torch").split("+")[0]
    except Exception:  # noqa: BLE001 - not installed, or broken metadata
        return None


def authoritative() -> bool:
    """True when the shipped table decides alone: no torch installed, or the table's own release."""
    installed = installed_version()
    return installed is None or installed == torch_names()["torch_version"]


def installed_has(module: str, name: str) -> bool:
    """True if the installed torch's ``module`` has ``name``; True too when that cannot be found out."""
    names = _installed_names(tuple(torch_names()["modules"]))
    if names is None:
        return True  # unknown: a finding must not rest on a guess
    return name in names.get(module, ())


@lru_cache(maxsize=1)
def _installed_names(modules: tuple[str, ...]) -> Optional[dict[str, frozenset[str]]]:
    if "torch" in sys.modules:  # already paid for by this process (the pytest plugin): read it here
        return _names_here(modules)
    return _names_in_child(modules)


def _names_in_child(modules: tuple[str, ...]) -> Optional[dict[str, frozenset[str]]]:
    """Return the installed torch's names of ``modules``, read by a child process (None: it failed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", _DUMP, *modules], capture_output=True, text=True,
                              timeout=DUMP_TIMEOUT, env=env, check=False)
        data = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): frozenset(v) for k, v in data.items() if isinstance(v, list)}


def _names_here(modules: tuple[str, ...]) -> Optional[dict[str, frozenset[str]]]:
    import importlib
    import pkgutil
    import warnings

    out: dict[str, frozenset[str]] = {}
    try:
        with warnings.catch_warnings():  # deprecated aliases warn on lookup
            warnings.simplefilter("ignore")
            for name in modules:
                module = importlib.import_module(name)
                names = set(dir(module)) | set(getattr(module, "__all__", ()))
                names.update(info.name for info in pkgutil.iter_modules(getattr(module, "__path__", [])))
                out[name] = frozenset(names)
    except Exception:  # noqa: BLE001 - a broken torch: undecided
        return None
    return out

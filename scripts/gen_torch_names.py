"""Regenerate ``src/pytest_traincheck/analyses/data/torch_names.json`` from the installed torch.

TRN208 (unknown-torch-api) checks attributes of a few torch modules against
this list when torch itself is not importable (a lint-only CI job), and
TRN207/TRN209 use its list of ``torch.nn`` module classes. Run it after a
torch upgrade:

    python3 scripts/gen_torch_names.py
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path

# The modules whose attributes TRN208 checks; keep in sync with rules/unknown_torch_api.py.
CHECKED = ("torch", "torch.nn", "torch.nn.functional", "torch.optim", "torch.utils.data")
OUT = Path(__file__).resolve().parents[1] / "src" / "pytest_traincheck" / "analyses" / "data" / "torch_names.json"


def public_names(module_name: str) -> list[str]:
    """Return the names an attribute lookup on the module can find, submodules included."""
    module = importlib.import_module(module_name)
    names = set(dir(module)) | set(getattr(module, "__all__", ()))
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        names.add(info.name)
    return sorted(names)


def nn_module_classes() -> list[str]:
    """Return the names of ``torch.nn`` attributes that are ``nn.Module`` subclasses."""
    import torch.nn as nn

    return sorted(
        name for name, value in vars(nn).items()
        if inspect.isclass(value) and issubclass(value, nn.Module)
    )


def main() -> int:
    import torch

    data = {
        "torch_version": torch.__version__.split("+")[0],
        "modules": {name: public_names(name) for name in CHECKED},
        "nn_module_classes": nn_module_classes(),
    }
    OUT.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUT} (torch {data['torch_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

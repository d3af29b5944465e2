"""traincheck: catch the silent mistakes of PyTorch training code.

``traincheck lint`` finds them statically; ``pytest --train-sanity`` runs your
own model and training step through dynamic checks. Importing this package is
cheap: torch is imported only by the parts that run models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CheckResult", "Report", "Training", "Verdict", "__version__", "run_checks"]

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.check import CheckResult, Verdict
    from pytest_traincheck.harness.results import Report
    from pytest_traincheck.harness.runner import run_checks
    from pytest_traincheck.harness.spec import Training

_LAZY = {
    "Training": "pytest_traincheck.harness.spec",
    "CheckResult": "pytest_traincheck.harness.check",
    "Verdict": "pytest_traincheck.harness.check",
    "Report": "pytest_traincheck.harness.results",
    "run_checks": "pytest_traincheck.harness.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_traincheck' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

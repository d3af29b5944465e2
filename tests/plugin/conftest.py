"""Dynamic tests need torch (the one-thread fixture is in tests/conftest.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")




# In-process pytester runs drop the modules they imported afterwards; import the engine
# (and torch's lazily imported parts) first so they are never imported twice.
from pytest_traincheck.harness import check as _base  # noqa: E402
from pytest_traincheck.harness import runner as _runner  # noqa: E402,F401
from pytest_traincheck.harness import session as _session  # noqa: E402,F401
from pytest_traincheck.plugin import collect as _collect  # noqa: E402,F401

_base.all_checks()
import torch._dynamo  # noqa: E402,F401  (optimizer.step() imports it lazily)

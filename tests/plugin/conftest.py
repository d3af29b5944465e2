"""Keep the dynamic-check tests fast: tiny models run best on one CPU thread."""

from __future__ import annotations

from typing import Iterator

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# In-process pytester runs drop the modules they imported afterwards; import the engine
# (and torch's lazily imported parts) first so they are never imported twice.
from pytest_traincheck.harness import check as _base  # noqa: E402
from pytest_traincheck.harness import runner as _runner  # noqa: E402,F401
from pytest_traincheck.harness import session as _session  # noqa: E402,F401
from pytest_traincheck.plugin import collect as _collect  # noqa: E402,F401

_base.all_checks()
import torch._dynamo  # noqa: E402,F401  (optimizer.step() imports it lazily)

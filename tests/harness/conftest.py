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

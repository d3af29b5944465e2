"""Dynamic tests need torch (the one-thread fixture is in tests/conftest.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")



"""A small MNIST classifier trained the way the traincheck checks expect: no silent mistakes."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

"""A one-line Unicode sparkline of a loss curve, scaled from zero, for the terminal summary."""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["BARS", "sparkline"]

BARS = "▁▂▃▄▅▆▇█"
NON_FINITE = "!"


def sparkline(values: Optional[Sequence[float]], width: int = 32) -> str:
    """Return ``values`` as at most ``width`` bar characters, scaled from zero when no value is negative."""
    if not values:
        return ""
    points = _downsample([float(v) for v in values], width)
    finite = [v for v in points if math.isfinite(v)]
    if not finite:
        return NON_FINITE * len(points)
    # From zero, not from the minimum: a loss that fell only to 68 % of its start must still look high
    # (min-to-max scaling drew it down to the lowest bar, as if it had converged).
    low = 0.0 if min(finite) >= 0 else min(finite)
    span = max(finite) - low
    return "".join(NON_FINITE if not math.isfinite(v) else
                   BARS[0 if span <= 0 else min(int((v - low) / span * len(BARS)), len(BARS) - 1)]
                   for v in points)


def _downsample(values: list[float], width: int) -> list[float]:
    """Keep ``width`` evenly spaced points, always including the first and the last."""
    if len(values) <= width or width < 2:
        return values[:max(width, 1)] if width < 2 else values
    last = len(values) - 1
    return [values[round(i * last / (width - 1))] for i in range(width)]

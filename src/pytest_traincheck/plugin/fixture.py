"""The `train_sanity` fixture: run the checks inside an ordinary test."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import pytest

from pytest_traincheck.plugin.options import read_options


class TrainSanity:
    """Call it to check setups and fail the test on problems; `.run()` just returns the `Report`."""

    def __init__(self, config: pytest.Config) -> None:
        self.options = read_options(config)

    def __call__(self, training: Any, **kwargs: Any) -> Any:
        """Run the checks and fail the calling test with the combined report if any fails."""
        report = self.run(training, **kwargs)
        if not report.ok:
            pytest.fail(f"{report.describe_problems()}\n\n{report.summary()}", pytrace=False)
        return report

    def run(self, training: Any, *, select: Optional[Iterable[str]] = None, ignore: Optional[Iterable[str]] = None,
            seed: Optional[int] = None, device: Optional[str] = None, strict: Optional[bool] = None,
            budget: Optional[float] = None) -> Any:
        """Run the checks (defaults from the `--train-sanity-*` options) and return the `Report`."""
        from pytest_traincheck.harness.runner import run_checks

        o = self.options
        return run_checks(training, select=o.select if select is None else select,
                          ignore=o.ignore if ignore is None else ignore, seed=o.seed if seed is None else seed,
                          device=device or o.device, strict=o.strict if strict is None else strict,
                          budget=budget or o.budget)


@pytest.fixture
def train_sanity(request: pytest.FixtureRequest) -> TrainSanity:
    """Check a `Training` setup: `train_sanity(training)` or `train_sanity.run(training)`."""
    return TrainSanity(request.config)

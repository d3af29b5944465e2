"""Test items: one per (setup, check); their failures show the check's evidence, not plugin code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.check import CheckResult
    from pytest_traincheck.plugin.collect import SanityState

RESULT_PROPERTY = "traincheck_result"
SERIES_PROPERTY = "traincheck_series"  # the recording check's per-step series, for the HTML report


class SanityFailure(Exception):
    """Raised by an item whose check ended in FAIL or ERROR."""

    def __init__(self, results: list[CheckResult]) -> None:
        super().__init__("\n\n".join(r.describe() for r in results))
        self.results = results


class SanityMixin:
    """Shared running and reporting of one check over one or more setups."""

    code: str
    state: SanityState

    def run_for(self, trainings: list[Any], source: str) -> None:
        """Run the check on each setup; fail, skip or pass (warnings go to the summary)."""
        results = [self.state.run(self.code, t, source) for t in trainings]
        for r in results:
            self.user_properties.append((RESULT_PROPERTY, r.to_dict()))  # type: ignore[attr-defined]
            series = self.state.runner.series.pop((r.setup, r.code), None)
            if series:  # sent with the report, so that the controller sees it under xdist too
                self.user_properties.append((SERIES_PROPERTY, {"setup": r.setup, "code": r.code,  # type: ignore[attr-defined]
                                                               "series": series}))
        problems = [r for r in results if r.verdict.is_problem]
        if problems:
            raise SanityFailure(problems)
        if results and all(r.verdict.value == "skip" for r in results):
            pytest.skip("; ".join(sorted({r.message for r in results})))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """Show the check's message, evidence and fix (and the user's traceback for ERROR)."""
        if isinstance(excinfo.value, SanityFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # type: ignore[misc]


class SanityItem(SanityMixin, pytest.Item):
    """One check on one setup declared in pyproject.toml."""

    def __init__(self, *, code: str, training: Any, source: str, state: SanityState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.code, self.training, self.source, self.state = code, training, source, state
        self.add_marker("train_sanity")

    def runtest(self) -> None:
        """Run the check."""
        self.run_for([self.training], self.source)

    def reportinfo(self) -> tuple[Any, Optional[int], str]:
        """Name the item by setup and check."""
        return self.path, None, f"traincheck {self.training.name} {self.code}"


class SetupErrorItem(pytest.Item):
    """A declared setup that could not be loaded: fails with the reason and the user's traceback."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message
        self.add_marker("train_sanity")

    def runtest(self) -> None:
        """Fail with the loading error."""
        raise SanityLoadError(self.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Union[str, Any]:
        """Show only the loading error."""
        if isinstance(excinfo.value, SanityLoadError):
            return self.message
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, Optional[int], str]:
        """Name the broken declaration."""
        return self.path, None, f"traincheck {self.name}"


class SanityLoadError(Exception):
    """A setup declaration could not be loaded."""


class FixtureSanityItem(SanityMixin, pytest.Function):
    """One check on every setup returned by a `train_sanity_trainings` conftest fixture."""

    def __init__(self, *, code: str, state: SanityState, source: str, setup: Optional[str] = None,
                 **kwargs: Any) -> None:
        self.code, self.state, self.source, self.setup_name = code, state, source, setup

        def check_fixture_setups(train_sanity_trainings: Any) -> None:
            from pytest_traincheck.harness.spec import as_trainings

            where = f"the `train_sanity_trainings` fixture ({source})"
            try:
                trainings = as_trainings(train_sanity_trainings, where)
            except Exception as exc:  # noqa: BLE001 - shown as the item's failure
                raise SanityLoadError(str(exc)) from None
            if setup is not None:  # an item of one setup, named at collection
                trainings = [t for t in trainings if t.name == setup]
                if not trainings:
                    raise SanityLoadError(f"{where} returned no setup named {setup!r} when the checks ran "
                                          "(it did at collection): return the same setups every call")
            self.run_for(trainings, source)

        super().__init__(callobj=check_fixture_setups, **kwargs)
        self.add_marker("train_sanity")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """Show the check's evidence, or the fixture's own error."""
        if isinstance(excinfo.value, SanityLoadError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Any, Optional[int], str]:
        """Name the setup (or the fixture source) and check."""
        return self.path, None, f"traincheck {self.setup_name or self.source} {self.code}"

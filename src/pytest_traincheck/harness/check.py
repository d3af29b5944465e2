"""Verdicts, results and the `Check` base class with its self-discovering registry."""

from __future__ import annotations

import enum
import importlib
import pkgutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Union

from pytest_traincheck import catalog

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.harness.core import Harness

__all__ = ["Check", "CheckResult", "Verdict", "all_checks", "get_check"]

Number = Union[int, float, str, bool, None]


class Verdict(str, enum.Enum):
    """The outcome of one check on one setup."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def is_problem(self) -> bool:
        """True for outcomes that fail a test run (FAIL, ERROR)."""
        return self in (Verdict.FAIL, Verdict.ERROR)


@dataclass
class CheckResult:
    """What one check concluded, with the numbers behind it and the catalogue's fix."""

    code: str
    slug: str
    verdict: Verdict
    message: str
    evidence: dict[str, Number] = field(default_factory=dict)
    fix: str = ""
    curve: Optional[list[float]] = None
    setup: str = ""
    traceback: Optional[str] = None  # the user's own traceback, for ERROR
    duration: float = 0.0

    @property
    def title(self) -> str:
        """Return ``TRN101-missing-zero-grad``, the id used for pytest items."""
        return f"{self.code}-{self.slug}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        """Rebuild a result from `to_dict` output (as sent back by pytest-xdist workers)."""
        return cls(**{**data, "verdict": Verdict(data["verdict"])})

    def describe(self) -> str:
        """Return the multi-line text shown when this result fails a test."""
        lines = [f"{self.code} {self.slug} [{self.setup}]: {self.verdict.name}", f"  {self.message}"]
        if self.evidence:
            lines.append("  evidence: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items()))
        if self.fix and self.verdict in (Verdict.FAIL, Verdict.WARN):
            lines.append(f"  fix: {self.fix}")
        if self.traceback:
            lines.append(self.traceback.rstrip())
        return "\n".join(lines)


def _fmt(value: Number) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Check:
    """Base class of a dynamic check: set ``CODE`` and implement ``run``.

    ``run(h)`` gets a `Harness` (fresh objects, the fixed batch, instrumented
    sessions) and returns a result built with `passed`, `warned`, `failed` or
    `skipped`. Subclassing registers the check; nothing else lists it.
    """

    CODE: ClassVar[str] = ""
    DEFAULT_ON: ClassVar[bool] = True
    NEEDS_STEP: ClassVar[bool] = False  # skip unless the user's own step/train_epoch is declared
    NEEDS_EVALUATE: ClassVar[bool] = False  # skip unless `evaluate` is declared
    STOCHASTIC: ClassVar[bool] = False  # retried with more seeds before a non-PASS verdict
    # The check that trains longest on one batch: its loss curve is drawn in the summary and its
    # session's per-step series go to TensorBoard.
    RECORDS_SERIES: ClassVar[bool] = False
    # Example setups (zero-arg functions returning a Training) that are the check's tests:
    # every PASSING one must PASS; every FAILING one must end with FAILS_WITH, or with the
    # verdict paired with it as `(factory, Verdict.WARN)`.
    PASSING: ClassVar[tuple[Callable[[], Any], ...]] = ()
    FAILING: ClassVar[tuple[Any, ...]] = ()
    FAILS_WITH: ClassVar[Verdict] = Verdict.FAIL

    _registry: ClassVar[dict[str, type[Check]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.CODE:
            return
        if cls.CODE not in catalog.CATALOG:
            raise ValueError(f"{cls.__name__}: {cls.CODE} is not in the catalogue")
        other = Check._registry.get(cls.CODE)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise ValueError(f"{cls.CODE} is claimed by {other.__name__} and {cls.__name__}")
        Check._registry[cls.CODE] = cls

    @classmethod
    def failing_examples(cls) -> list[tuple[Callable[[], Any], Verdict]]:
        """Return each failing example with the verdict it must produce."""
        return [e if isinstance(e, tuple) else (e, cls.FAILS_WITH) for e in cls.FAILING]

    @property
    def pitfall(self) -> catalog.Pitfall:
        """Return this check's catalogue entry."""
        return catalog.get(self.CODE)

    def run(self, h: Harness) -> CheckResult:
        """Run the check against the harness and return its verdict."""
        raise NotImplementedError

    def result(self, verdict: Verdict, message: str, curve: Optional[list[float]] = None,
               **evidence: Number) -> CheckResult:
        """Build a result carrying the catalogue's slug and fix."""
        p = self.pitfall
        return CheckResult(self.CODE, p.slug, verdict, message, dict(evidence), p.fix, curve)

    def passed(self, message: str, curve: Optional[list[float]] = None, **evidence: Number) -> CheckResult:
        """Return a PASS result."""
        return self.result(Verdict.PASS, message, curve, **evidence)

    def warned(self, message: str, curve: Optional[list[float]] = None, **evidence: Number) -> CheckResult:
        """Return a WARN result (FAIL under strict mode)."""
        return self.result(Verdict.WARN, message, curve, **evidence)

    def failed(self, message: str, curve: Optional[list[float]] = None, **evidence: Number) -> CheckResult:
        """Return a FAIL result."""
        return self.result(Verdict.FAIL, message, curve, **evidence)

    def skipped(self, reason: str) -> CheckResult:
        """Return a SKIP result with the reason."""
        return self.result(Verdict.SKIP, reason)

    def per_optimizer(self, traces: dict[str, Any], judge: Callable[[Any], CheckResult]) -> CheckResult:
        """Judge each optimizer's trace; with several, the first finding names its optimizer."""
        if len(traces) == 1:
            return judge(next(iter(traces.values())))
        results = {name: judge(trace) for name, trace in traces.items()}
        for name, r in results.items():
            r.message = f"optimizer `{name}`: {r.message}"
            r.evidence["optimizer"] = name
        for verdict in (Verdict.ERROR, Verdict.FAIL, Verdict.WARN):
            found = [r for r in results.values() if r.verdict is verdict]
            if found:
                return found[0]
        passed = [r for r in results.values() if r.verdict is Verdict.PASS]
        if not passed:
            return next(iter(results.values()))
        first = passed[0]
        first.message = "; ".join(r.message for r in results.values())
        return first


_IMPORTED: list[bool] = []  # the check modules were imported (listing the package costs a folder scan)


def all_checks() -> dict[str, type[Check]]:
    """Import every check module of this package once and return the registry by code."""
    if not _IMPORTED:
        package = importlib.import_module("pytest_traincheck.checks")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
        _IMPORTED.append(True)
    return dict(sorted(Check._registry.items()))


def get_check(code: str) -> type[Check]:
    """Return the check class for ``code`` (raises KeyError)."""
    return all_checks()[code]

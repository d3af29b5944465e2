"""`run_checks`: the pure Python API behind the pytest plugin and the fixture."""

from __future__ import annotations

import time
import traceback
from typing import Any, Iterable, Optional, Sequence, Union

import torch

from pytest_traincheck import catalog
from pytest_traincheck.harness.check import Check, CheckResult, Verdict, all_checks
from pytest_traincheck.harness.core import (BudgetExceeded, Clock, Harness, MissingField, SetupData, UserCodeError,
                                            error_line, isolated)
from pytest_traincheck.harness.shared import SharedModules
from pytest_traincheck.harness.spec import SetupError, Training, as_trainings

__all__ = ["DEFAULT_BUDGET", "Runner", "enabled_codes", "prepare", "run_check", "run_checks"]

DEFAULT_BUDGET = 60.0  # seconds per check; generous for CPU, bounded for a hanging step
# Strictness: True (every WARN fails), False, or the codes/prefixes whose WARNs fail.
Strict = Union[bool, Sequence[str]]


def is_strict(code: str, strict: Strict) -> bool:
    """True when a WARN of ``code`` fails under ``strict``."""
    if isinstance(strict, bool):
        return strict
    return catalog.matches(code, strict)


SEED_RETRIES = 2  # stochastic checks get up to 1 + 2 seeds before a non-PASS verdict


def enabled_codes(select: Optional[Iterable[str]] = None, ignore: Optional[Iterable[str]] = None) -> list[str]:
    """Return the check codes that run: the most specific selector wins, ignore on ties."""
    chosen = catalog.parse_codes(list(select or []), "select") or None  # empty: the checks on by default
    ignored = catalog.parse_codes(list(ignore or []), "ignore")
    return [code for code, cls in all_checks().items() if catalog.is_selected(code, cls.DEFAULT_ON, chosen, ignored)]


def prepare(training: Training, seed: int = 0, budget: Optional[float] = None) -> SetupData:
    """Load the setup's fixed batches and confirm its factories return fresh objects, within ``budget``."""
    from pytest_traincheck.harness.distributed import single_rank

    # A data iterator or factory that hangs is stopped like a hanging step (the SIGALRM backstop).
    clock = Clock(budget, stage="preparing the setup (its first batch and two models from the factories)")
    with clock.backstop():
        data = SetupData.load(training, seed, clock)
        with isolated(seed), single_rank(training):
            harness = Harness(data, seed=seed, device="cpu")
            harness.clock = clock
            # Built as returned (not moved, mode untouched) so that what they share is saved unchanged.
            first, second = harness.built_model(), harness.built_model()  # raises on the same object twice
            data.shared = SharedModules.between(first, second)
            opt_a, opt_b = harness.optimizer(first), harness.optimizer(second)
            if opt_a is opt_b:
                raise SetupError("the `optimizer` factory returned the same optimizer twice; build a new one "
                                 "from its `params` argument each call")
        clock.check()
    return data


def _probe_step(data: SetupData, seed: int, device: Optional[str], budget: Optional[float]) -> Optional[str]:
    """Run the user's step once; return the signature of the error it raises, if any."""
    harness = Harness(data, seed=seed, device=device, budget=budget)
    try:
        with isolated(seed), harness.clock.backstop(), harness.session() as s:
            s.step()
    except UserCodeError as exc:
        return error_line(exc.user_traceback)
    except (SetupError, BudgetExceeded, MissingField):
        return None  # reported by each check in its own words
    return None


# Checks that explain a crash of the user's step in their own terms; they own a repeated error.
EXPLAINERS = ("TRN109", "TRN408")


def _settle_blocked(code: str, result: CheckResult, data: SetupData, seed: int, device: Optional[str],
                    budget: Optional[float]) -> CheckResult:
    """Let one check report an error that the user's step raises everywhere; skip the others as blocked."""
    mine = error_line(result.traceback) if result.verdict is Verdict.ERROR else None
    if mine is not None and not data.probed:  # the first crash: is it the step's own, on every run?
        data.probed = True
        data.step_error = _probe_step(data, seed, device or data.training.device, budget)
    signature = data.step_error
    if signature is None:
        return result
    if mine != signature and not (code in EXPLAINERS and result.verdict is Verdict.FAIL):
        return result
    if data.blocker is None:
        data.blocker = (code, signature)
        for other in EXPLAINERS:
            if other != code and other in all_checks():
                explained = _run_seeds(all_checks()[other](), data, seed, device or data.training.device, budget)
                if explained.verdict is Verdict.FAIL:
                    data.blocker = (other, explained.message.splitlines()[0])
                    break
    owner, reason = data.blocker
    if owner == code:
        return result
    skipped = all_checks()[code]().skipped(f"blocked by {owner}: {reason}")
    skipped.evidence["blocked_by"] = owner
    return skipped


def device_problem(device: Optional[str]) -> Optional[str]:
    """Return why ``device`` cannot be used here, or None."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        return f"invalid device {device!r}: {exc}"
    if dev.type == "cuda" and dev.index is None and not torch.cuda.is_available():
        return f"device {device!r} requested but CUDA is not available (torch.cuda.is_available() is False)"
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
    if dev.type == "meta":
        return f"device {device!r} holds no data: the checks need real tensors"
    return None


def run_check(code: str, data: Union[SetupData, BaseException], *, seed: int = 0, device: Optional[str] = None,
              budget: Optional[float] = DEFAULT_BUDGET, strict: Strict = False,
              series: Optional[dict[str, list[float]]] = None) -> CheckResult:
    """Run one check on one prepared setup and return its result (never raises for user errors).

    Given a ``series`` dict, the per-step gradient norms and update ratios of the session
    behind the returned result are recorded into it (for TensorBoard).
    """
    cls = all_checks()[code]
    start = time.monotonic()
    if isinstance(data, BaseException):
        result, name = _timed_out(code, data) or _error(cls(), data), ""
    else:
        name = data.training.name
        try:
            result = _timed_out(code, data.timeout) or _run_seeds(cls(), data, seed,
                                                                  device or data.training.device, budget, series)
            result = _settle_blocked(code, result, data, seed, device, budget)
        finally:
            if data.shared is not None:  # the next check (and the user) get the shared modules as they were
                data.shared.restore()
        if data.timeout is not None and data.timeout.owner is None:
            data.timeout.owner = code  # this item reports the timeout; the setup's later items are blocked
    if result.verdict is Verdict.WARN and is_strict(code, strict):
        result.verdict = Verdict.FAIL
        result.message = "(strict) " + result.message
    result.setup = result.setup or name
    result.duration = time.monotonic() - start
    return result


def _timed_out(code: str, exc: Optional[BaseException]) -> Optional[CheckResult]:
    """Return a skip blocked by the check that first ran past the budget of this setup, if another did."""
    if not isinstance(exc, BudgetExceeded):
        return None
    if exc.owner is None:
        exc.owner = code  # a setup that timed out while being prepared: this item reports it
    if exc.owner == code:
        return None
    skipped = all_checks()[code]().skipped(
        f"blocked by {exc.owner} timing out (slow in {exc.where}): the setup's other checks do not wait out the "
        f"budget again; raise the budget as {exc.owner}'s error says")
    skipped.evidence["blocked_by"] = exc.owner
    return skipped


def _run_seeds(check: Check, data: SetupData, seed: int, device: Optional[str],
               budget: Optional[float], series: Optional[dict[str, list[float]]] = None) -> CheckResult:
    unusable = device_problem(device)
    if unusable is not None and "CUDA is not available" not in unusable:
        # A device name torch rejects, or a CUDA index this machine lacks: every check would fail the
        # same way, so one clear setup error, not a silent skip. (A bare `cuda` without CUDA stays a
        # skip, so that setups written for a GPU still collect on CPU CI; `cuda:N` names a device.)
        return _error(check, SetupError(unusable))
    skip = _skip_reason(check, data.training, device)
    if skip is not None:
        return check.skipped(skip)
    first = _run_once(check, data, seed, device, budget, series)
    if not check.STOCHASTIC or first.verdict in (Verdict.PASS, Verdict.SKIP, Verdict.ERROR):
        return first
    first_series = dict(series) if series is not None else None
    for k in range(1, SEED_RETRIES + 1):
        retry = _run_once(check, data, seed + k, device, budget, series)
        if retry.verdict is Verdict.PASS:
            retry.evidence["seeds"] = f"passed on seed {seed + k} after {k} other seed(s) did not"
            return retry
    if series is not None and first_series is not None:  # the series of the run reported
        series.clear()
        series.update(first_series)
    tries = SEED_RETRIES + 1
    first.evidence["seeds"] = f"{tries}/{tries} seeds ({seed}..{seed + SEED_RETRIES}) did not pass"
    return first


def _skip_reason(check: Check, training: Training, device: Optional[str]) -> Optional[str]:
    if check.NEEDS_STEP and not training.has_user_step:
        return "needs the user's own training code: declare `step` or `train_epoch` in the Training"
    if check.NEEDS_EVALUATE and training.evaluate is None:
        return "needs the user's evaluation code: declare `evaluate=` in the Training"
    return device_problem(device)


def _run_once(check: Check, data: SetupData, seed: int, device: Optional[str],
              budget: Optional[float], series: Optional[dict[str, list[float]]] = None) -> CheckResult:
    harness = Harness(data, seed=seed, device=device, budget=budget)
    if series is not None:
        series.clear()
        harness.series = series
    from pytest_traincheck.harness.distributed import single_rank
    from pytest_traincheck.harness.ranks import DistributedCheck

    try:
        world_of_one = single_rank(None if isinstance(check, DistributedCheck) else data.training)
        with isolated(seed), harness.clock.backstop(), world_of_one:
            return check.run(harness)
    except BudgetExceeded as exc:
        if data.timeout is None:
            data.timeout = exc
        return _error(check, exc)
    except (UserCodeError, SetupError) as exc:
        return _error(check, exc)
    except MissingField as exc:  # the check needs a part of the batch it cannot find
        return check.skipped(str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in traincheck must not hide the other checks
        result = _error(check, exc)
        result.message = f"internal error in traincheck's {check.CODE} check: {type(exc).__name__}: {exc}"
        result.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return result


def _error(check: Check, exc: BaseException) -> CheckResult:
    if isinstance(exc, UserCodeError):
        message, tb = f"{exc} while running check {check.CODE}", exc.user_traceback
    elif isinstance(exc, BudgetExceeded):
        message, tb = f"{check.CODE}: {exc}", None
    else:
        message, tb = f"{type(exc).__name__ if not isinstance(exc, SetupError) else 'setup error'}: {exc}", None
    result = check.result(Verdict.ERROR, message)
    result.traceback = tb
    return result


class Runner:
    """Run checks on setups under one seed, device, budget and strictness, preparing each setup once.

    The one loop behind `run_checks` and the pytest plugin. Given a ``logdir``, every result
    goes to a TensorBoard log, with the per-step series of the check that records them.
    """

    def __init__(self, *, seed: int = 0, device: Optional[str] = None, budget: Optional[float] = DEFAULT_BUDGET,
                 strict: Strict = False, logdir: Optional[str] = None, run: Optional[int] = None,
                 keep_series: bool = False) -> None:
        self.seed, self.device, self.budget, self.strict = seed, device, budget, strict
        self.prepared: dict[Any, Union[SetupData, BaseException]] = {}
        # With ``keep_series`` (the HTML report), the per-step series of the recording check are
        # kept per (setup, code) after each run.
        self.keep_series = keep_series
        self.series: dict[tuple[str, str], dict[str, list[float]]] = {}
        self.log: Any = None
        if logdir:
            from pytest_traincheck.harness.tensorboard import TensorBoardLog

            self.log = TensorBoardLog(logdir, seed, run)  # raises TensorBoardMissing before any check runs

    def run(self, code: str, training: Training, key: Any = None) -> CheckResult:
        """Run one check on one setup; ``key`` names the setup for preparing it once (default: the object)."""
        key = id(training) if key is None else key
        if key not in self.prepared:
            self.prepared[key] = prepare_or_error(training, self.seed, self.budget)
        series: Optional[dict[str, list[float]]] = None
        if (self.log is not None or self.keep_series) and all_checks()[code].RECORDS_SERIES:
            series = {}
        result = run_check(code, self.prepared[key], seed=self.seed, device=self.device, budget=self.budget,
                           strict=self.strict, series=series)
        result.setup = training.name
        if self.keep_series and series:
            self.series[(training.name, code)] = series
        if self.log is not None:
            self.log.add(result, series)
        return result

    def meta(self, codes: list[str]) -> dict[str, Any]:
        """Return what is needed to reproduce a run of ``codes``."""
        return run_meta(self.seed, self.device, codes, self.strict)

    def close(self) -> None:
        """Close the TensorBoard log, if any."""
        if self.log is not None:
            self.log.close()


def run_checks(training: Union[Training, Sequence[Training]], select: Optional[Iterable[str]] = None,
               ignore: Optional[Iterable[str]] = None, seed: int = 0, device: Optional[str] = None,
               strict: Strict = False, budget: Optional[float] = DEFAULT_BUDGET, logdir: Optional[str] = None) -> Any:
    """Run the enabled checks on one or several setups and return a `Report` (and a TensorBoard log)."""
    from pytest_traincheck.harness.results import Report

    codes = enabled_codes(select, ignore)
    runner = Runner(seed=seed, device=device, budget=budget, strict=strict, logdir=logdir)
    report = Report(meta=runner.meta(codes))
    try:
        trainings = as_trainings(training, "run_checks()")
        report.results.extend(runner.run(code, t) for t in trainings for code in codes)
    finally:
        runner.close()
    return report


def prepare_or_error(training: Training, seed: int,
                     budget: Optional[float] = DEFAULT_BUDGET) -> Union[SetupData, BaseException]:
    """Return the prepared setup, or the error that every check of it will report."""
    try:
        return prepare(training, seed, budget)
    except (SetupError, UserCodeError, BudgetExceeded) as exc:
        return exc


def run_meta(seed: int, device: Optional[str], codes: list[str], strict: Strict) -> dict[str, Any]:
    """Return what is needed to reproduce a run."""
    return {"seed": seed, "device": device or "cpu", "torch": torch.__version__, "strict": strict,
            "checks": codes}

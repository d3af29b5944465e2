"""The `--train-sanity-*` options, their ini keys, and `[tool.traincheck]` in pyproject.toml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import pytest

from pytest_traincheck import catalog

HELP_ENABLE = "run the training sanity checks on the declared setups (one test item per setup and check)"
HELP_SELECT = "comma-separated check codes or prefixes to run, e.g. TRN1,TRN601 (default: the checks on by default)"
HELP_IGNORE = "comma-separated check codes or prefixes to skip, e.g. TRN105"
HELP_STRICT = "treat WARN results as failures"
HELP_SEED = "seed for every RNG the checks use (default 0); replay a run with the seed it printed"
HELP_DEVICE = "device to run the checks on: cpu (default) or cuda[:N]"
HELP_REPORT = "write the results of every check as JSON to this path"
HELP_BUDGET = "time budget in seconds per check (default 60); a slower or hanging step becomes an ERROR"
HELP_WORLD_SIZE = ("run the distributed checks (TRN7xx) of every setup on N local ranks (gloo on CPU, nccl with a GPU "
                   "per rank), overriding the setups' own `world_size`")
HELP_LOGDIR = ("write TensorBoard event files per setup to LOGDIR/<setup>-seed<seed>: the overfit loss curve, per-step "
               "gradient norms and update ratios, and every verdict (needs the tensorboard package)")

HELP_HTML = ("write one self-contained HTML page to this path: per setup the verdicts, the overfit loss curve, "
             "the gradient-flow and update-ratio charts, and each problem's evidence and fix (needs matplotlib)")

DECLARE_HINT = ("traincheck: no training setup declared for --train-sanity; add `[tool.traincheck.sanity] "
                "trainings = [\"mypkg.train:make_training\"]` to pyproject.toml or a `train_sanity_trainings` "
                "fixture to conftest.py, returning pytest_traincheck.Training objects")

# (flag suffix, dest/ini key, help, kind)
_OPTIONS = (
    ("", "train_sanity", HELP_ENABLE, "bool"),
    ("-select", "train_sanity_select", HELP_SELECT, "codes"),
    ("-ignore", "train_sanity_ignore", HELP_IGNORE, "codes"),
    ("-strict", "train_sanity_strict", HELP_STRICT, "strict"),
    ("-seed", "train_sanity_seed", HELP_SEED, "int"),
    ("-device", "train_sanity_device", HELP_DEVICE, "str"),
    ("-report", "train_sanity_report", HELP_REPORT, "str"),
    ("-budget", "train_sanity_budget", HELP_BUDGET, "float"),
    ("-logdir", "train_sanity_logdir", HELP_LOGDIR, "str"),
    ("-world-size", "train_sanity_world_size", HELP_WORLD_SIZE, "int"),
    ("-html", "train_sanity_html", HELP_HTML, "str"),
)


def add_options(parser: pytest.Parser) -> None:
    """Register every command-line option and its ini key, sharing one help text."""
    group = parser.getgroup("traincheck", "training sanity checks (traincheck)")
    for suffix, dest, help_text, kind in _OPTIONS:
        flag = f"--train-sanity{suffix}"
        if kind in ("bool", "strict"):
            group.addoption(flag, action="store_true", default=None, dest=dest, help=help_text)
            parser.addini(dest, help_text, type="bool", default=False)
        else:
            group.addoption(flag, action="store", default=None, dest=dest, metavar=dest.rsplit("_", 1)[-1].upper(),
                            help=help_text)
            parser.addini(dest, help_text, default=None)


@dataclass
class SanityOptions:
    """The effective settings: command line, then ini, then pyproject.toml, then defaults."""

    enabled: bool = False
    select: Optional[list[str]] = None
    ignore: list[str] = field(default_factory=list)
    strict: Union[bool, list[str]] = False  # True, or the codes whose warnings fail
    seed: int = 0
    device: Optional[str] = None
    report: Optional[str] = None
    budget: float = 60.0
    logdir: Optional[str] = None
    world_size: Optional[int] = None
    html: Optional[str] = None
    trainings: list[str] = field(default_factory=list)


def read_options(config: pytest.Config) -> SanityOptions:
    """Merge the sources; a bad value raises `pytest.UsageError` naming where it came from."""
    file_cfg = load_sanity_config(config.rootpath)
    opts = SanityOptions(trainings=file_cfg.get("trainings", []))
    for suffix, dest, _, kind in _OPTIONS:
        raw, where = config.getoption(dest), f"--train-sanity{suffix}"
        if raw is None:
            raw, where = config.getini(dest), f"ini option `{dest}`"
            if raw in (None, "", False) and dest.replace("train_sanity_", "") in file_cfg:
                key = dest.replace("train_sanity_", "")
                raw, where = file_cfg[key], f"{file_cfg['_path']} [tool.traincheck] {key}"
        if raw in (None, "") or (kind in ("bool", "strict") and raw is False):
            continue
        setattr(opts, "enabled" if dest == "train_sanity" else dest.replace("train_sanity_", ""),
                _convert(raw, kind, where))
    return opts


def _convert(raw: Any, kind: str, where: str) -> Any:
    try:
        if kind == "strict" and isinstance(raw, (list, tuple)):
            return _codes(raw, where)  # strict only for these checks (pyproject: strict = ["TRN105"])
        if kind in ("bool", "strict"):
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            value = float(raw)
            if value <= 0:
                raise ValueError("must be > 0")
            return value
        if kind == "codes":
            return _codes(raw, where)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"{where}: invalid value {raw!r} ({exc})") from None


def _codes(raw: Any, where: str) -> list[str]:
    try:
        return catalog.parse_codes(raw, where)
    except catalog.SelectorError as exc:
        raise pytest.UsageError(str(exc)) from None


# The keys of [tool.traincheck.sanity]: the setups, then one per option (the enabling flag aside).
SANITY_KEYS = ("trainings", *(dest.replace("train_sanity_", "") for _, dest, _, _ in _OPTIONS[1:]))


def load_sanity_config(rootdir: Path) -> dict[str, Any]:
    """Read `[tool.traincheck]` select/ignore and `[tool.traincheck.sanity]` from rootdir/pyproject.toml."""
    path = Path(rootdir) / "pyproject.toml"
    if not path.is_file():
        return {}
    from pytest_traincheck.config import ConfigError, read_table

    try:
        tool = read_table(path)  # the same reader as `traincheck lint`, the same one-line errors
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    sanity = tool.get("sanity", {})
    if not isinstance(sanity, dict):
        raise pytest.UsageError(f"{path}: [tool.traincheck.sanity] must be a table")
    unknown = sorted(set(sanity) - set(SANITY_KEYS))
    if unknown:
        known = ", ".join(sorted(SANITY_KEYS))
        raise pytest.UsageError(f"{path}: [tool.traincheck.sanity] unknown key {unknown[0]!r} (known: {known})")
    out: dict[str, Any] = {"_path": path.name}
    for key in ("select", "ignore"):  # the lint selection applies unless the sanity table has its own
        if key in sanity or key in tool:
            out[key] = sanity.get(key, tool.get(key))
    for key in SANITY_KEYS[1:]:
        if key in sanity and key not in out:
            out[key] = sanity[key]
    trainings = sanity.get("trainings", [])
    if isinstance(trainings, str):
        trainings = [trainings]
    if not isinstance(trainings, list) or not all(isinstance(t, str) and ":" in t for t in trainings):
        raise pytest.UsageError(f"{path}: [tool.traincheck.sanity] trainings must be a list of "
                                f"\"module.path:factory\" strings, got {trainings!r}")
    out["trainings"] = trainings
    return out

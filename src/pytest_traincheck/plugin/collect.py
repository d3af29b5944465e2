"""The collecting sub-plugin, registered only under `--train-sanity`: setups -> items -> summary."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any, Optional, Union

import pytest

from pytest_traincheck.plugin.items import (RESULT_PROPERTY, SERIES_PROPERTY, FixtureSanityItem, SanityItem,
                                            SetupErrorItem)
from pytest_traincheck.plugin.options import DECLARE_HINT, SanityOptions

FIXTURE_NAME = "train_sanity_trainings"
STATE_KEY = pytest.StashKey["SanityState"]()


class SanityState:
    """Per-process state: options, enabled checks, the runner, results seen by this process."""

    def __init__(self, config: pytest.Config, options: SanityOptions) -> None:
        from pytest_traincheck.harness.runner import Runner, enabled_codes
        from pytest_traincheck.harness.tensorboard import TensorBoardMissing

        self.config, self.options = config, options
        try:
            self.codes = enabled_codes(options.select, options.ignore)
        except ValueError as exc:
            raise pytest.UsageError(f"--train-sanity-select/--train-sanity-ignore: {exc}") from None
        from pytest_traincheck.harness.html_report import HtmlMissing, require_matplotlib

        try:
            if options.html:
                require_matplotlib()  # fail at start, not after the last check
            # xdist workers write into the run folders the controller chose, not the next ones.
            run = getattr(config, "workerinput", {}).get("traincheck_run")
            self.runner = Runner(seed=options.seed, device=options.device, budget=options.budget,
                                 strict=options.strict, logdir=options.logdir, run=run,
                                 keep_series=bool(options.html))
        except (TensorBoardMissing, HtmlMissing) as exc:
            raise pytest.UsageError(str(exc)) from None
        from pytest_traincheck.harness.distributed import set_world_size

        try:
            set_world_size(options.world_size)
        except ValueError as exc:
            raise pytest.UsageError(f"--train-sanity-world-size: {exc}") from None
        self.results: list[dict[str, Any]] = []
        self.series: dict[tuple[str, str], dict[str, list[float]]] = {}  # for the HTML report
        self.conftest_dirs: dict[Path, str] = {}
        self.directories: dict[Path, pytest.Directory] = {}
        self.declared = False
        self.uncollected: dict[str, list[str]] = {}  # single-process setup -> distributed checks left out

    def codes_for(self, training: Any) -> list[str]:
        """Return the enabled codes collected for ``training``.

        A distributed check can only skip on a single-process setup, so it is collected there only
        when `--train-sanity-select`/`select` names it (TRN7, TRN70 or the code: then it skips with
        its reason); the setup is listed after collection instead.
        """
        from pytest_traincheck import catalog
        from pytest_traincheck.harness.check import all_checks
        from pytest_traincheck.harness.distributed import effective_world_size
        from pytest_traincheck.harness.ranks import DistributedCheck

        named = [s for s in self.options.select or [] if len(s) >= len("TRN7")]
        world = effective_world_size(training)
        codes, left = [], []
        for code in self.codes:
            cls = all_checks()[code]
            out = issubclass(cls, DistributedCheck) and world < cls.MIN_WORLD and not catalog.matches(code, named)
            (left if out else codes).append(code)
        if left:
            self.uncollected[training.name] = left
        return codes

    def run(self, code: str, training: Any, source: str) -> Any:
        """Run one check on one setup, preparing the setup once per process."""
        return self.runner.run(code, training, key=(source, training.name))


class SanityPlugin:
    """Collect the declared setups as items, print the header, the summary and the JSON report."""

    def __init__(self, config: pytest.Config, options: SanityOptions) -> None:
        self.state = SanityState(config, options)
        config.stash[STATE_KEY] = self.state

    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        """Remember the directory nodes pytest collects: conftest fixtures are visible below them."""
        if isinstance(collector, pytest.Directory):
            self.state.directories.setdefault(collector.path, collector)

    def pytest_plugin_registered(self, plugin: Any) -> None:
        """Remember conftest modules that define the `train_sanity_trainings` fixture."""
        path = getattr(plugin, "__file__", None)
        if path and Path(path).name == "conftest.py" and hasattr(plugin, FIXTURE_NAME):
            self.state.conftest_dirs[Path(path).parent] = path

    def pytest_report_header(self, config: pytest.Config) -> str:
        """Print everything needed to reproduce the run."""
        import torch

        o = self.state.options
        return (f"traincheck: seed={o.seed}, device={o.device or 'cpu'}, torch={torch.__version__}, "
                f"strict={o.strict}, budget={o.budget:g}s, checks={','.join(self.state.codes)}")

    @pytest.hookimpl(tryfirst=True)  # before -k/-m deselection looks at the items
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """Append one item per (setup, check) for pyproject setups and per check for fixture sources."""
        new: list[pytest.Item] = []
        for spec in self.state.options.trainings:
            new.extend(self._pyproject_items(session, spec))
        for directory, conftest in sorted(self.state.conftest_dirs.items()):
            new.extend(self._fixture_items(session, directory, conftest))
        self.state.declared = bool(new)
        items.extend(new)
        for parent in dict.fromkeys(item.parent for item in new):  # count them in "collected N items"
            result = [item for item in new if item.parent is parent]
            session.ihook.pytest_collectreport(report=pytest.CollectReport(parent.nodeid, "passed", None, result))

    def _pyproject_items(self, session: pytest.Session, spec: str) -> list[pytest.Item]:
        parent = _collector(session, f"traincheck::{spec}")
        try:
            trainings = load_trainings(spec, session.config.rootpath)
        except SetupLoadFailure as exc:
            return [SetupErrorItem.from_parent(parent, name="setup", message=str(exc))]
        items: list[pytest.Item] = []
        for t in trainings:
            setup = _collector(session, f"traincheck::{t.name}")
            items.extend(SanityItem.from_parent(setup, name=self._title(code), code=code, training=t,
                                                source=spec, state=self.state) for code in self.state.codes_for(t))
        return items

    def _fixture_items(self, session: pytest.Session, directory: Path, conftest: str) -> list[pytest.Item]:
        rel = _relative(Path(conftest), session.config.rootpath)
        anchor = self._anchor(session, directory)
        trainings = _fixture_setups(session, anchor)
        if trainings is None:  # the fixture needs other fixtures: one item per check over all its setups
            parent = _collector(anchor, f"traincheck::{rel}")
            return [FixtureSanityItem.from_parent(parent, name=self._title(code), code=code, state=self.state,
                                                  source=rel) for code in self.state.codes]
        items: list[pytest.Item] = []
        for t in trainings:  # named per setup, like pyproject setups, so `-k <setup>` selects them
            parent = _collector(anchor, f"traincheck::{t.name}")
            items.extend(FixtureSanityItem.from_parent(parent, name=self._title(code), code=code, state=self.state,
                                                       source=rel, setup=t.name) for code in self.state.codes_for(t))
        return items

    def _anchor(self, session: pytest.Session, directory: Path) -> Union[pytest.Session, pytest.Collector]:
        """Return the node below which the conftest's fixtures are visible."""
        if directory == session.config.rootpath:
            return session
        # pytest >= 9.1 matches conftest fixtures by the directory node object itself, so the items
        # must hang below the node pytest collected (a new node for the same path would not do).
        known = self.state.directories.get(directory)
        return known if known is not None else pytest.Dir.from_parent(session, path=directory)

    @staticmethod
    def _title(code: str) -> str:
        from pytest_traincheck import catalog

        return f"{code}-{catalog.get(code).slug}"

    def pytest_report_collectionfinish(self) -> Optional[str]:
        """Say which setups got no distributed checks (TRN7xx), and how to run them."""
        if not self.state.uncollected:
            return None
        groups: dict[tuple[str, ...], list[str]] = {}
        for name, codes in self.state.uncollected.items():
            groups.setdefault(tuple(codes), []).append(name)
        return "\n".join(
            f"traincheck: {_span(codes)} (distributed) not collected for the single-process setup(s) "
            f"{', '.join(names)}: declare `Training(world_size=2, ...)` or run with --train-sanity-world-size 2 "
            "(--train-sanity-select TRN7 collects them to show why they skip)" for codes, names in groups.items())

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Under xdist, hand every worker this invocation's TensorBoard run number."""
        if self.state.runner.log is not None:
            node.workerinput["traincheck_run"] = self.state.runner.log.run

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller learns from the workers that setups were declared."""
        if any(i.startswith("traincheck::") for i in ids):
            self.state.declared = True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect results, including those sent back by xdist workers."""
        if report.when == "call":
            self.state.results.extend(v for k, v in report.user_properties if k == RESULT_PROPERTY)
            for key, value in report.user_properties:
                if key == SERIES_PROPERTY:
                    self.state.series[(value["setup"], value["code"])] = value["series"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the declare hint, the warnings and one table per setup."""
        if not self.state.declared:
            terminalreporter.write_line(DECLARE_HINT, yellow=True)
            return
        results = self.state.results
        if not results:
            return
        terminalreporter.section("traincheck training sanity")
        for r in results:
            if r["verdict"] == "warn":
                terminalreporter.write_line(f"WARN {r['setup']}::{r['code']}-{r['slug']}: {r['message']}", yellow=True)
        from pytest_traincheck.harness.check import CheckResult
        from pytest_traincheck.harness.results import summary_lines

        for line in summary_lines(CheckResult.from_dict(r) for r in results):
            terminalreporter.write_line(line)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Close the TensorBoard log (every process), write the JSON and HTML reports (controller only under xdist)."""
        self.state.runner.close()
        path = self.state.options.report
        if path and not hasattr(session.config, "workerinput"):
            data = {"meta": self.state.runner.meta(self.state.codes), "results": self.state.results}
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        html = self.state.options.html
        if html and not hasattr(session.config, "workerinput"):
            from pytest_traincheck.harness.html_report import write

            write(html, self.state.runner.meta(self.state.codes), self.state.results, self.state.series)


class SetupLoadFailure(Exception):
    """A `[tool.traincheck.sanity] trainings` entry could not be turned into setups."""


def load_trainings(spec: str, rootdir: Path) -> list[Any]:
    """Import ``module:factory`` (relative to rootdir), call it, and return its Training list."""
    from pytest_traincheck.harness.core import user_traceback
    from pytest_traincheck.harness.spec import SetupError, as_trainings

    where = f"{spec} (pyproject.toml [tool.traincheck.sanity] trainings)"
    module_name, _, attr = spec.partition(":")
    for folder in (rootdir / "src", rootdir):
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        value = obj() if callable(obj) and not _is_training(obj) else obj
        return as_trainings(value, where)
    except SetupError as exc:
        raise SetupLoadFailure(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - user code: shown with its own traceback
        raise SetupLoadFailure(f"cannot load {where}: {type(exc).__name__}: {exc}\n{user_traceback(exc)}") from None


def _is_training(obj: Any) -> bool:
    from pytest_traincheck.harness.spec import Training

    return isinstance(obj, Training)


def _fixture_setups(session: pytest.Session, anchor: Any) -> Optional[list[Any]]:
    """Call a `train_sanity_trainings` fixture that takes no arguments to learn its setups (names, world sizes).

    None when it takes arguments (other fixtures) or cannot be called now: its items are then
    one per check, and the fixture runs only when they do.
    """
    import inspect

    from pytest_traincheck.harness.spec import as_trainings

    defs = session._fixturemanager.getfixturedefs(FIXTURE_NAME, anchor)  # noqa: SLF001 - the fixture's function
    if not defs or defs[-1].argnames:
        return None
    func = defs[-1].func
    try:
        value = func()
        if inspect.isgenerator(value):
            value = next(value)  # a yield fixture: its setups are what it yields
        return as_trainings(value, FIXTURE_NAME)
    except Exception:  # noqa: BLE001 - the items report the fixture's error when they run it
        return None


def _span(codes: tuple[str, ...]) -> str:
    numbers = [int(code[3:]) for code in codes]
    consecutive = len(codes) > 2 and numbers == list(range(numbers[0], numbers[0] + len(codes)))
    return f"{codes[0]}-{codes[-1]}" if consecutive else ", ".join(codes)


def _collector(parent: Union[pytest.Session, pytest.Dir], nodeid: str) -> pytest.Collector:
    return SanityCollector.from_parent(parent, name=nodeid.rsplit("::", 1)[-1], nodeid=nodeid)


class SanityCollector(pytest.Collector):
    """A grouping node (`traincheck::<setup>`); its items are built directly, not collected."""

    def collect(self) -> list[Any]:
        """Return nothing: items are created by the plugin."""
        return []


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


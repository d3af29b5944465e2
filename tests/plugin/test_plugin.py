"""The pytest adapter, driven through pytester (subprocesses where torch state would leak)."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

SETUPS = '''
import torch
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.checks.missing_zero_grad import _no_zero_grad

torch.set_num_threads(1)

def make():
    return [ex.setup("good"), ex.setup("nozero", step=_no_zero_grad)]

def broken():
    raise RuntimeError("cannot build the setup")
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(mysetup=SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    return pytester


def test_help_lists_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "*--train-sanity *run the training sanity checks*",
        "*--train-sanity-select=SELECT*", "*--train-sanity-budget=BUDGET*",
        "*train_sanity_seed (string)*"])


def test_without_flag_nothing_is_collected_and_torch_not_imported(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import sys\ndef pytest_sessionfinish():\n    assert 'torch' not in sys.modules\n")
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_nothing_declared_prints_one_line_and_exits_5(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["traincheck: no training setup declared for --train-sanity; add *"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_nothing_declared_beside_other_tests_prints_the_line_and_keeps_their_result(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK  # code 5 only when nothing else was collected (README)
    result.stdout.fnmatch_lines(["traincheck: no training setup declared for --train-sanity; add *"])


def test_distributed_checks_are_collected_only_where_they_can_run(project: pytest.Pytester) -> None:
    plain = project.runpytest("--train-sanity", "-p", "no:cacheprovider", "--collect-only", "-q")
    plain.stdout.fnmatch_lines(["traincheck: TRN701-TRN706 (distributed) not collected for the single-process "
                                "setup(s) good, nozero: declare `Training(world_size=2, ...)` or run with "
                                "--train-sanity-world-size 2 *"])
    assert "-replicas-diverge" not in plain.stdout.str() and "TRN101-missing-zero-grad" in plain.stdout.str()
    ranks = project.runpytest("--train-sanity", "-p", "no:cacheprovider", "--collect-only", "-q",
                              "--train-sanity-world-size", "2")
    ranks.stdout.fnmatch_lines(["traincheck::good::TRN701-replicas-diverge"])
    assert "not collected" not in ranks.stdout.str()
    # Named in the selection, they are collected on a single-process setup and skip with their reason.
    named = project.runpytest("--train-sanity", "-p", "no:cacheprovider", "-v", "--train-sanity-select", "TRN70")
    named.assert_outcomes(skipped=12)
    named.stdout.fnmatch_lines(["*::good::TRN701-replicas-diverge SKIPPED (single-process*"])


def test_pyproject_setups_become_items(project: pytest.Pytester) -> None:
    result = project.runpytest("--train-sanity", "-p", "no:cacheprovider", "-v", "-k", "TRN101 or TRN604",
                               "--train-sanity-report", "out.json")
    from pytest_traincheck.harness.runner import enabled_codes

    # two single-process setups: every enabled check but the distributed ones (TRN7xx) is an item of each;
    # -k keeps TRN101 and TRN604 of both
    codes = [c for c in enabled_codes(None, None) if not c.startswith("TRN7")]
    result.assert_outcomes(passed=3, failed=1, deselected=2 * len(codes) - 4)
    result.stdout.fnmatch_lines([
        "traincheck: seed=0, device=cpu, torch=*, checks=TRN101,*",
        "traincheck::good::TRN101-missing-zero-grad PASSED*",
        "traincheck::nozero::TRN101-missing-zero-grad FAILED*",
        "TRN101 missing-zero-grad [[]nozero[]]: FAIL",
        "  after 2 training steps on the same batch, `fc1.weight.grad` *max abs diff*",
        "  fix: Call `optimizer.zero_grad()`*",
        "*traincheck training sanity*",
        "setup 'good': *",
    ])
    assert "collect.py" not in result.stdout.str()  # no plugin internals in the failure
    data = json.loads((project.path / "out.json").read_text())
    assert data["meta"]["seed"] == 0 and len(data["results"]) == 4


FIXTURE_CONFTEST = '''
import pytest, torch
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.checks.bias_before_batchnorm import BiasBeforeBatchNorm
torch.set_num_threads(1)

@pytest.fixture
def train_sanity_trainings():
    return [ex.setup("fx"), BiasBeforeBatchNorm.FAILING[0]()]
'''


@pytest.mark.slow
def test_conftest_fixture_setups_under_xdist(pytester: pytest.Pytester) -> None:
    """The nested pytest -n 2 run (two worker processes import torch): the slow half."""
    pytester.makeconftest(FIXTURE_CONFTEST)
    result = pytester.runpytest_subprocess("--train-sanity", "-p", "no:cacheprovider", "-n", "2",
                                           "--train-sanity-select", "TRN202,TRN101")
    result.assert_outcomes(passed=4)  # one item per setup and check
    result.stdout.fnmatch_lines(["*WARN example::TRN202-bias-before-batchnorm: `0` has a bias*"])


def test_conftest_fixture_setups_select_and_strict(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FIXTURE_CONFTEST)
    strict = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-strict",
                                "--train-sanity-select", "TRN202")
    strict.assert_outcomes(failed=1, passed=1)
    strict.stdout.fnmatch_lines(["*(strict) `0` has a bias*"])


STRICT_SETUPS = '''
import torch
from pytest_traincheck.harness import mode_examples as modes
from pytest_traincheck.checks.bias_before_batchnorm import BiasBeforeBatchNorm
torch.set_num_threads(1)

def make():
    bias = BiasBeforeBatchNorm.FAILING[0]()
    bias.name = "alpha"
    return [bias, modes.setup(name="beta", evaluate=modes.eval_with_grad)]
'''


@pytest.mark.parametrize(("strict", "outcomes"), [
    ("", dict(passed=2)),  # both only warn: a wasted bias and a wasted graph change no result
    ("strict = true\n", dict(failed=2)),
    ('strict = ["TRN202"]\n', dict(failed=1, passed=1)),  # strictness per check
])
def test_strictness_is_set_in_pyproject(pytester: pytest.Pytester, strict: str, outcomes: dict[str, int]) -> None:
    pytester.makepyfile(mysetup=STRICT_SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n' + strict)
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-select", "TRN202,TRN303",
                                "-k", "alpha and TRN202 or beta and TRN303")
    result.assert_outcomes(**outcomes)
    if strict:
        result.stdout.fnmatch_lines(["*(strict) `0` has a bias*"])


def test_bad_strict_value_in_pyproject_is_a_one_line_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["m:f"]\nstrict = ["XYZ9"]\n')
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown code or prefix 'XYZ9'*"])


def test_path_values_outside_the_project_do_not_move_the_rootdir(
        project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    # pytest picks its rootdir before plugins load, so it took an existing path after an option it did
    # not know yet for a test path, and the project's pyproject.toml was ignored (issue 11).
    # The setups live in lib/, importable through the project's `pythonpath` setting only.
    project.mkdir("lib")
    (project.path / "mysetup.py").rename(project.path / "lib" / "mysetup.py")
    project.makepyprojecttoml('[tool.pytest.ini_options]\npythonpath = ["lib"]\n'
                              '[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    report, runs = elsewhere / "report.json", elsewhere / "runs"
    report.write_text("{}")  # both exist from an earlier run
    runs.mkdir()
    result = project.runpytest("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-select", "TRN101",
                               "--train-sanity-report", str(report), "--train-sanity-logdir", str(runs))
    result.stdout.fnmatch_lines([f"rootdir: {project.path}*"])
    result.assert_outcomes(passed=1, failed=1)
    assert len(json.loads(report.read_text())["results"]) == 2
    assert sorted(p.name for p in runs.iterdir()) == ["good-seed0", "nozero-seed0"]


def test_a_rootdir_that_cannot_be_repaired_is_a_one_line_error(
        project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    project.makepyprojecttoml('[tool.pytest.ini_options]\naddopts = "-q"\n'
                              '[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    report = tmp_path_factory.mktemp("elsewhere") / "report.json"
    report.write_text("{}")
    result = project.runpytest("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-report", str(report))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*chose rootdir * instead of {project.path} (whose addopts it could not apply); "
                                 f"write the option with '=': --train-sanity-report={report}"])


PER_SETUP_CONFTEST = '''
import pytest, torch
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.checks.missing_zero_grad import _no_zero_grad
torch.set_num_threads(1)

@pytest.fixture(scope="session")
def train_sanity_trainings():
    return [ex.setup("alpha"), ex.setup("beta", step=_no_zero_grad)]
'''


def test_conftest_fixture_below_the_rootdir_gives_items_per_setup(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    pytester.mkdir("tests")
    (pytester.path / "tests" / "conftest.py").write_text(PER_SETUP_CONFTEST)
    (pytester.path / "tests" / "test_plain.py").write_text("def test_plain():\n    pass\n")
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider", "-v", "--train-sanity-select", "TRN101")
    result.assert_outcomes(passed=2, failed=1)  # the plain test, alpha passes, beta fails; nothing "not found"
    result.stdout.fnmatch_lines(["*traincheck::alpha::TRN101-missing-zero-grad PASSED*",
                                 "*traincheck::beta::TRN101-missing-zero-grad FAILED*"])
    only = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-select", "TRN101",
                              "-k", "alpha")
    only.assert_outcomes(passed=1, deselected=2)  # -k <setup name>, as for pyproject setups


def test_a_conftest_fixture_with_arguments_still_runs(pytester: pytest.Pytester) -> None:
    pytester.mkdir("tests")
    conftest = PER_SETUP_CONFTEST.replace("def train_sanity_trainings():", "def train_sanity_trainings(tmp_path_factory):")
    (pytester.path / "tests" / "conftest.py").write_text(conftest)
    result = pytester.runpytest("tests", "--train-sanity", "-p", "no:cacheprovider", "-v",
                                "--train-sanity-select", "TRN101")
    result.assert_outcomes(failed=1)  # one item per check over both setups: beta fails it
    result.stdout.fnmatch_lines(["*TRN101 missing-zero-grad [[]beta[]]: FAIL*"])


def test_broken_factory_is_one_failing_item_without_plugin_traceback(project: pytest.Pytester) -> None:
    project.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:broken"]\n')
    result = project.runpytest("--train-sanity", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "cannot load mysetup:broken *RuntimeError: cannot build the setup", "*in broken*"])


@pytest.mark.parametrize(("args", "message"), [
    (["--train-sanity-budget", "abc"], "--train-sanity-budget: invalid value 'abc'*"),
    (["--train-sanity-select", "XYZ9"], "--train-sanity-select: unknown code or prefix 'XYZ9'*"),
    (["-o", "train_sanity_seed=x"], "ini option `train_sanity_seed`: invalid value 'x'*"),
])
def test_bad_values_name_their_source(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest("--train-sanity", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_pyproject_select_is_honoured(pytester: pytest.Pytester) -> None:
    from pytest_traincheck.plugin.options import load_sanity_config

    pytester.makepyprojecttoml('[tool.traincheck]\nselect = ["TRN1"]\nignore = ["TRN105"]\n'
                               '[tool.traincheck.sanity]\ntrainings = ["m:f"]\nseed = 4\n')
    cfg = load_sanity_config(pytester.path)
    assert cfg["select"] == ["TRN1"] and cfg["ignore"] == ["TRN105"] and cfg["trainings"] == ["m:f"]
    assert cfg["seed"] == 4


def test_unknown_sanity_key_is_a_one_line_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["m:f"]\nseeds = 4\n')
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pyproject.toml: [[]tool.traincheck.sanity[]] unknown key 'seeds' (known: budget, *)"])
    assert "Traceback" not in result.stderr.str()


def test_train_sanity_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fx='''
import torch
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.checks.missing_zero_grad import _no_zero_grad
torch.set_num_threads(1)

def test_good(train_sanity):
    report = train_sanity.run(ex.setup(), select=["TRN101", "TRN201"])
    assert report.ok and report.get("TRN101").verdict.value == "pass"

def test_bad(train_sanity):
    train_sanity(ex.setup("nozero", step=_no_zero_grad), select=["TRN101"])
''')
    result = pytester.runpytest("-p", "no:cacheprovider")  # the harness restores torch's global state
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*TRN101 missing-zero-grad [[]nozero[]]: FAIL*"])

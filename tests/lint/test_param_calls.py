"""Models and losses passed as parameters: settled against every call of the function in the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_traincheck.cli import main
from pytest_traincheck.lint.project import Condition, FileFacts, ProjectFacts
from pytest_traincheck.lint.testing import lint_source

MODEL = """
import torch.nn as nn
import torch.nn.functional as F


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=1)


class Logits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(x)
"""
TRAIN = """
import torch.nn as nn


def fit(classifier, loader):
    criterion = nn.CrossEntropyLoss()
    for x, y in loader:
        loss = criterion(classifier(x), y)
        loss.backward()
"""


def _findings(callers: dict[str, str], train: str = TRAIN) -> list[int]:
    files = {"model.py": MODEL, **callers}
    findings, _ = lint_source(train, ["TRN201"], path="train.py", files=files)
    return [f.line for f in findings]


def test_every_caller_passes_the_softmax_model() -> None:
    main_py = "import torch\nimport train\nfrom model import Classifier\ntrain.fit(Classifier(), loader)\n"
    other = "import torch\nfrom train import fit\nimport model\nfit(model.Classifier().cuda(), loader)\n"
    assert _findings({"main.py": main_py, "tools/other.py": other.replace("from train", "from ..train")}) == [7]
    assert _findings({"main.py": main_py, "other.py": other}) == [7]


@pytest.mark.parametrize("passed", ["Logits()", "make_model()", "nets[0]", "*models"])
def test_one_caller_passing_logits_or_unknown_keeps_it_quiet(passed: str) -> None:
    main_py = "import torch\nimport train\nfrom model import Classifier, Logits\ntrain.fit(Classifier(), loader)\n"
    other = f"import torch\nfrom train import fit\nfrom model import Classifier, Logits\nfit({passed}, loader)\n"
    assert _findings({"main.py": main_py, "other.py": other}) == []


def test_a_default_left_to_the_function_is_unknown() -> None:
    train = TRAIN.replace("def fit(classifier, loader)", "def fit(loader, classifier=None)")
    main_py = "import torch\nimport train\nfrom model import Classifier\ntrain.fit(loader, Classifier())\ntrain.fit(loader)\n"
    assert _findings({"main.py": main_py}, train) == []
    assert _findings({"main.py": main_py.replace("train.fit(loader)\n", "")}, train) == [7]


def test_a_same_named_function_of_another_module_is_not_a_caller() -> None:
    main_py = "import torch\nimport train\nfrom model import Classifier\ntrain.fit(Classifier(), loader)\n"
    # other.py calls its own `fit` (and another package's): neither reaches train.fit
    other = ("import torch\nimport sklearn_like\nfrom model import Logits\n\ndef fit(m, l):\n    pass\n\n"
             "fit(Logits(), loader)\n")
    local = "import torch\nimport tools.fit_helpers as helpers\nfrom model import Logits\nhelpers.fit(Logits(), 1)\n"
    assert _findings({"main.py": main_py, "other.py": other, "tools/fit_helpers.py": "def fit(a, b):\n    pass\n",
                      "use.py": local}) == [7]


def test_a_function_nobody_calls_is_never_reported() -> None:
    assert _findings({"main.py": "import torch\nfrom model import Classifier\nnet = Classifier()\n"}) == []


def test_through_the_callers_own_parameter() -> None:
    run = "import torch\nimport train\n\ndef run(net, loader):\n    train.fit(net, loader)\n"
    top = "import torch\nimport run as runner\nfrom model import Classifier, Logits\nrunner.run({}, loader)\n"
    assert _findings({"run.py": run, "main.py": top.format("Classifier()")}) == [7]
    assert _findings({"run.py": run, "main.py": top.format("Classifier()"), "again.py": top.format("Classifier()")}) == [7]
    assert _findings({"run.py": run, "main.py": top.format("Classifier()"),
                      "eval.py": top.format("Logits()")}) == []


def test_the_loss_as_a_parameter_needs_cross_entropy_at_every_call() -> None:
    train = """
import torch.nn.functional as F


def step(logits, loss_fn, y):
    return loss_fn(F.softmax(logits, dim=1), y)
"""
    call = "import torch\nimport torch.nn as nn\nfrom train import step\nstep(z, {}, y)\n"
    assert _findings({"main.py": call.format("nn.CrossEntropyLoss()")}, train) == [5]
    assert _findings({"main.py": call.format("nn.CrossEntropyLoss()"),
                      "b.py": call.format("nn.MSELoss()")}, train) == []
    assert _findings({"main.py": call.format("criterion")}, train) == []


def test_facts_round_trip_through_plain_data() -> None:
    facts = FileFacts(functions=["fit"], calls=[("train.fit", "train.fit", [[0, "instance:model.Classifier"],
                                                                        ["loader", "?"]])])
    again = FileFacts.from_dict(json.loads(json.dumps(facts.to_dict())))
    assert again == facts
    project = ProjectFacts([("train.py", FileFacts(functions=["fit"])), ("main.py", again)])
    assert project.call_sites("fit", "train.py") == [("main.py", [[0, "instance:model.Classifier"], ["loader", "?"]])]
    assert not project.holds(Condition("param", "fit", "0:classifier=returns:softmax"), "train.py")  # no class facts


def test_settled_from_the_cache_when_only_the_caller_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "train.py").write_text(TRAIN)
    caller = tmp_path / "main.py"
    caller.write_text("import torch\nimport train\nfrom model import Classifier\ntrain.fit(Classifier(), loader)\n")

    def lint() -> list[str]:
        main(["lint", str(tmp_path), "--select", "TRN201", "--output-format", "concise", "-q",
              "--cache-dir", str(tmp_path / ".cache")])
        return [line for line in capsys.readouterr().out.splitlines() if "TRN201" in line]

    assert len(lint()) == 1
    assert len(lint()) == 1  # warm: answered from the cache
    caller.write_text(caller.read_text().replace("Classifier()", "Logits()").replace("import Classifier",
                                                                                     "import Logits"))
    assert lint() == []


def test_cache_entries_keep_call_sites_and_refuse_malformed_ones() -> None:
    from pytest_traincheck.lint import cache
    from pytest_traincheck.lint.engine import FileResult

    facts = FileFacts(functions=["fit"], calls=[("fit", "", [[0, "seq:torch.nn.Softmax"], ["*", "?"]])])
    entry = {"path": "a.py", "findings": [], "deferred": [], "facts": facts.to_dict(), "internal_error": False}
    assert cache.decode(json.loads(json.dumps(entry))) == FileResult("a.py", facts=facts)
    for bad in ([["fit", "", [[0.5, "?"]]]], [["fit", None, []]], [["fit", ""]], "calls"):
        broken = dict(entry, facts=dict(facts.to_dict(), calls=bad))
        with pytest.raises(cache.BadEntry):
            cache.decode(json.loads(json.dumps(broken)))
    with pytest.raises(cache.BadEntry):  # an entry of the old layout (classes by name only)
        cache.decode(dict(entry, facts={}))

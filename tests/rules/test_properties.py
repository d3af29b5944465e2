"""Property-based tests of the engine on generated training programs: no crash, fixes round-trip."""

from __future__ import annotations

import libcst as cst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_traincheck.lint import engine
from pytest_traincheck.lint.registry import all_rules

ALL = engine.Settings(tuple(rule.CODE for rule in all_rules()))
FIX = engine.Settings(ALL.codes, fix=True, unsafe_fixes=True)

# Statements a training loop is made of, in every order a buggy program might use.
LOOP_STATEMENTS = [
    "optimizer.zero_grad()",
    "model.zero_grad(set_to_none=True)",
    "out = model(x)",
    "out = F.softmax(model(x), dim=1)",
    "out = model(x).softmax(1)",
    "loss = criterion(out, y)",
    "loss = F.cross_entropy(F.log_softmax(out, 1), y)",
    "loss.backward()",
    "optimizer.step()",
    "torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)",
    "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
    "running += loss",
    "running += loss.item()",
    "torch.load(path)",
    "h = x.permute(0, 2, 1).view(b, -1)",
    "scheduler.step()",
    "if i % 4 == 0:\n    optimizer.step()\n    optimizer.zero_grad()",
    "with torch.no_grad():\n    acc = evaluate(model)",
]

MODULE_HEADERS = [
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n",
    "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n",
    "import torch\n",
    "",
]

MODELS = [
    "model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Softmax())\n",
    "model = nn.LSTM(10, 20)\n",
    "model = Net()\n",
    "",
]

NET = '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.layers = [nn.Linear(4, 4)]

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.softmax(x)
'''


def _indent(block: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in block.splitlines())


@st.composite
def programs(draw: st.DrawFn) -> str:
    """Build a module: imports, maybe a model class, a model, and a loop of shuffled statements."""
    header = draw(st.sampled_from(MODULE_HEADERS))
    net = NET if draw(st.booleans()) else ""
    model = draw(st.sampled_from(MODELS))
    body = draw(st.lists(st.sampled_from(LOOP_STATEMENTS), min_size=0, max_size=8))
    wrapped = draw(st.sampled_from(["for", "while", "def"]))
    inner = "\n".join(_indent(s, "        ") for s in body) or "        pass"
    if wrapped == "def":
        loop = f"def train(model, loader, optimizer):\n    for i, (x, y) in enumerate(loader):\n{inner}\n"
    elif wrapped == "while":
        loop = f"while True:\n    for x, y in loader:\n{inner}\n"
    else:
        loop = f"for epoch in range(3):\n    for i, (x, y) in enumerate(loader):\n{inner}\n"
    return header + net + model + loop


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_engine_never_crashes_on_generated_loops(source: str) -> None:
    result = engine.lint_bytes("gen.py", source.encode(), ALL)
    assert not result.internal_error, [f.message for f in result.findings if f.code == "TRN001"]
    assert all(f.code != "TRN000" for f in result.findings), "generated programs are valid Python"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_fixes_round_trip(source: str) -> None:
    result = engine.lint_bytes("gen.py", source.encode(), FIX)
    if result.fixed_source is None:
        return
    cst.parse_module(result.fixed_source)  # the fixed code parses
    again = engine.lint_bytes("gen.py", result.fixed_source.encode(), FIX)
    assert again.fixed_source is None, "a second --fix changed the code again"


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    result = engine.lint_bytes("noise.py", text.encode("utf-8", "surrogatepass"), ALL)
    assert not result.internal_error

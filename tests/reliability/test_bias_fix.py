"""TRN202 flags a bias only when the layer's output feeds the BatchNorm alone, and its fix is unsafe."""

from __future__ import annotations

import pytest

from pytest_traincheck.lint.testing import lint_source

HEADER = """\
import torch.nn as nn

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
"""

ESCAPES = {
    "residual": "        h = self.conv(x)\n        return self.bn(h) + h\n",
    "returned_too": "        h = self.conv(x)\n        y = self.bn(h)\n        return y, h\n",
    "read_after": "        x = self.conv(x)\n        y = self.bn(x)\n        return torch.cat([x, y])\n",
    "read_before": "        h = self.conv(x)\n        s = h.mean()\n        return self.bn(h) * s\n",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_trn202_quiet_when_the_output_is_used_beside_the_norm(name: str) -> None:
    findings, _ = lint_source(HEADER + ESCAPES[name], ["TRN202"], dedent=False)
    assert findings == []


def test_trn202_quiet_when_a_sequential_layer_is_also_called_alone() -> None:
    source = """\
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3)
        self.body = nn.Sequential(self.conv, nn.BatchNorm2d(8))

    def forward(self, x):
        return self.body(x) + self.conv(x)
"""
    findings, _ = lint_source(source, ["TRN202"], dedent=False)
    assert findings == []


def test_trn202_still_flags_outputs_that_feed_the_norm_alone() -> None:
    for body in ("        return self.bn(self.conv(x))\n",
                 "        x = self.conv(x)\n        x = self.bn(x)\n        return x\n",
                 "        h = self.conv(x)\n        out = self.bn(h)\n        return out.relu()\n"):
        findings, _ = lint_source(HEADER + body, ["TRN202"], dedent=False)
        assert [f.code for f in findings] == ["TRN202"], body


def test_trn202_fix_is_unsafe_and_says_why() -> None:
    from pytest_traincheck.rules.bias_before_batchnorm import BiasBeforeBatchNorm

    source = HEADER + "        return self.bn(self.conv(x))\n"
    findings, fixed = lint_source(source, ["TRN202"], fix=True, dedent=False)
    assert fixed is None  # a plain --fix leaves it alone
    assert findings[0].unsafe_fix and not findings[0].fixable
    _, fixed = lint_source(source, ["TRN202"], fix=True, unsafe_fixes=True, dedent=False)
    assert fixed is not None and "bias=False" in fixed
    assert not BiasBeforeBatchNorm.FIX_SAFE
    safety = BiasBeforeBatchNorm.__doc__.split("## Fix safety", 1)[1]
    assert "Unsafe" in safety and "state_dict" in safety


def test_trn202_fixed_model_computes_the_same_but_old_checkpoints_do_not_load_strictly() -> None:
    torch = pytest.importorskip("torch")
    source = HEADER.replace("import torch.nn as nn", "import torch\nimport torch.nn as nn") + \
        "        return self.bn(self.conv(x))\n"
    _, fixed = lint_source(source, ["TRN202"], fix=True, unsafe_fixes=True, dedent=False)
    old_scope: dict[str, object] = {}
    new_scope: dict[str, object] = {}
    exec(compile(source, "old.py", "exec"), old_scope)
    exec(compile(fixed, "new.py", "exec"), new_scope)
    torch.manual_seed(0)
    old = old_scope["Block"]()
    new = new_scope["Block"]()
    state = old.state_dict()
    with pytest.raises(RuntimeError, match="conv.bias"):
        new.load_state_dict(state)
    new.load_state_dict(state, strict=False)
    x = torch.randn(4, 8, 5, 5)
    assert torch.allclose(old(x), new(x), atol=1e-5)  # training mode: batch statistics cancel the bias

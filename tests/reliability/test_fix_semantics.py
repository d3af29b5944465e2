"""Safe fixes keep behaviour: the fixed code is executed and must compute what the original computed."""

from __future__ import annotations

import itertools
import warnings

import pytest

from pytest_traincheck.lint.testing import lint_source

torch = pytest.importorskip("torch")

LEGACY = ("<absent>", "None", "True", "False")
REDUCTIONS = ("<absent>", "'mean'", "'sum'", "'none'", "reduction")  # the last one is a variable

PRELUDE = """\
import torch
import torch.nn as nn
import torch.nn.functional as F
torch.manual_seed(0)
reduction = "sum"
x = torch.randn(4, 3)
y = torch.randn(4, 3)
logits = torch.randn(4, 5)
labels = torch.tensor([0, 2, 4, 1])
logp = torch.randn(4, 3).log_softmax(1)
p = torch.randn(4, 3).softmax(1)
"""

CALLS = {
    "F.mse_loss": "F.mse_loss(x, y{args})",
    "nn.MSELoss": "nn.MSELoss({args0})(x, y)",
    "F.cross_entropy": "F.cross_entropy(logits, labels{args})",
    "nn.NLLLoss": "nn.NLLLoss({args0})(logits.log_softmax(1), labels)",
    "F.kl_div": "F.kl_div(logp, p{args})",
}


def _arguments(size_average: str, reduce: str, reduction: str) -> list[str]:
    pairs = (("size_average", size_average), ("reduce", reduce), ("reduction", reduction))
    return [f"{name}={value}" for name, value in pairs if value != "<absent>"]


def _lint(source: str) -> tuple[list[str], "str | None"]:
    findings, _ = lint_source(source, ["TRN901"], dedent=False)
    _, fixed = lint_source(source, ["TRN901"], fix=True, dedent=False)
    return [f.code for f in findings], fixed


def _run(source: str) -> dict[str, object]:
    scope: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(source, "snippet.py", "exec"), scope)
    return scope


@pytest.mark.parametrize("call", sorted(CALLS))
def test_trn901_legacy_reduction_fix_keeps_every_loss_value(call: str) -> None:
    # Every combination becomes one line of one script: the script runs before and after the fix.
    lines = []
    for size_average, reduce, reduction in itertools.product(LEGACY, LEGACY, REDUCTIONS):
        if size_average == reduce == "<absent>":
            continue  # no legacy argument: nothing to report
        arguments = _arguments(size_average, reduce, reduction)
        lines.append(CALLS[call].format(args="".join(", " + a for a in arguments), args0=", ".join(arguments)))
    source = PRELUDE + "".join(f"loss_{i} = {line}\n" for i, line in enumerate(lines))
    codes, fixed = _lint(source)
    assert codes == ["TRN901"] * len(lines)
    assert fixed is not None
    before, after = _run(source), _run(fixed)
    unfixed = 0
    for i, (line, new) in enumerate(zip(lines, fixed.splitlines()[-len(lines):])):
        if "size_average" in new or "reduce=" in new:
            unfixed += 1
            # only F.kl_div beside a variable reduction (possibly "batchmean") may stay unfixed
            assert call == "F.kl_div" and "reduction=reduction" in line, line
            continue
        value, fixed_value = before[f"loss_{i}"], after[f"loss_{i}"]
        assert value.shape == fixed_value.shape and torch.equal(value, fixed_value), (line, new)
    assert unfixed <= 12


def test_trn901_kl_div_batchmean_with_legacy_arguments_is_not_rewritten_wrongly() -> None:
    # F.kl_div divides by the batch size whenever reduction == "batchmean", even when the legacy
    # arguments chose the reduction: dropping reduction="batchmean" would change the value.
    source = PRELUDE + "loss = F.kl_div(logp, p, size_average=False, reduction='batchmean')\n"
    codes, fixed = _lint(source)
    assert codes == ["TRN901"]
    if fixed is not None:
        assert torch.equal(_run(source)["loss"], _run(fixed)["loss"])


def test_trn901_positional_legacy_arguments_get_no_fix() -> None:
    # nn.MSELoss(None, False): size_average is positional; only reduce= is a keyword.
    source = PRELUDE + "loss = nn.MSELoss(False, reduce=True)(x, y)\n"
    codes, fixed = _lint(source)
    assert codes == ["TRN901"]
    if fixed is not None:
        assert torch.equal(_run(source)["loss"], _run(fixed)["loss"])


def test_trn901_message_does_not_claim_mean_when_reduction_is_kept() -> None:
    source = PRELUDE + "loss = F.mse_loss(x, y, size_average=None, reduce=None, reduction=reduction)\n"
    findings, _ = lint_source(source, ["TRN901"], dedent=False)
    _, fixed = lint_source(source, ["TRN901"], fix=True, dedent=False)
    assert "'mean'" not in findings[0].message
    assert fixed is not None and fixed.splitlines()[-1] == "loss = F.mse_loss(x, y, reduction=reduction)"

"""The torch vocabulary is one decision: rules that ask the same question about the same code agree."""

from __future__ import annotations

import pytest

from pytest_traincheck.lint.testing import lint_source

TRAIN = '''
import torch
{imports}

def train(model, loader, optimizer, criterion):
    for x, y in loader:
        optimizer.zero_grad()
        with {header}:
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
'''

EVALUATE = '''
import torch
{imports}

def evaluate(model, val_loader):
    model.eval()
    for x, y in val_loader:
        with {header}:
            out = model(x)
'''

# (extra imports, the `with` header, whether gradient tracking is off inside it)
HEADERS = [
    ("", "torch.no_grad()", True),
    ("", "torch.inference_mode()", True),
    ("", "torch.set_grad_enabled(False)", True),
    ("", "torch.set_grad_enabled(mode=False)", True),
    ("", "torch.autograd.no_grad()", True),
    ("", "torch.autograd.grad_mode.no_grad()", True),
    ("import torch as th", "th.no_grad()", True),
    ("from torch import no_grad", "no_grad()", True),
    ("from torch import inference_mode as im", "im()", True),
    ("", "torch.inference_mode(False)", False),
    ("", "torch.enable_grad()", False),
    ("", "torch.no_grad(), torch.enable_grad()", False),
    ("", "torch.enable_grad(), torch.no_grad()", True),
    ("import contextlib", "contextlib.nullcontext()", False),
    ("import paddle", "paddle.no_grad()", False),  # not torch's
]


@pytest.mark.parametrize(("imports", "header", "off"), HEADERS, ids=[h for _, h, _ in HEADERS])
def test_backward_under_no_grad_and_evaluation_with_grad_agree(imports: str, header: str, off: bool) -> None:
    trained, _ = lint_source(TRAIN.format(imports=imports, header=header), ["TRN104"])
    evaluated, _ = lint_source(EVALUATE.format(imports=imports, header=header), ["TRN303"])
    # TRN104: the loss was computed with tracking off; TRN303: the evaluation ran with tracking on.
    assert [f.code for f in trained] == (["TRN104"] if off else [])
    assert [f.code for f in evaluated] == ([] if off else ["TRN303"])


def test_one_optimizer_predicate_for_loops_and_eval_flow() -> None:
    from pytest_traincheck.analyses.torch_vocabulary import optimizer_like, steps_an_optimizer
    import libcst as cst

    for name in ("optimizer", "opt", "opt_g", "optimizerD", "self.optim", "gen_opt"):
        assert optimizer_like(name) and steps_an_optimizer(cst.parse_expression(name)), name
    for name in ("scheduler", "lr_scheduler", "warmup", "options", "adoption", "env"):
        assert not optimizer_like(name) and not steps_an_optimizer(cst.parse_expression(name)), name
    assert steps_an_optimizer(cst.parse_expression("scaler")) and steps_an_optimizer(cst.parse_expression("self.optimizers()"))

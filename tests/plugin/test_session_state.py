"""A whole `pytest --train-sanity` session leaves the process as it found it, failures and errors included."""

from __future__ import annotations

import json

import pytest

SNAPSHOT = '''
import json, random
import numpy as np
import torch
import torch.nn.utils
import torch.optim.optimizer as optimizer_module
import torch.nn.modules.module as module_module

def _snapshot():
    return {
        "torch_rng": torch.get_rng_state().sum().item(),
        "numpy_rng": int(np.random.get_state()[1].sum()),
        "random_rng": hash(random.getstate()),
        "grad_enabled": torch.is_grad_enabled(),
        "default_dtype": str(torch.get_default_dtype()),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
        "anomaly": torch.is_anomaly_enabled(),
        "clip_norm": id(torch.nn.utils.clip_grad_norm_),
        "clip_value": id(torch.nn.utils.clip_grad_value_),
        "losses": [id(getattr(torch.nn.functional, name)) for name in
                   ("cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                    "mse_loss")],
        "optimizer_step_hooks": len(optimizer_module._global_optimizer_pre_hooks)
                                 + len(optimizer_module._global_optimizer_post_hooks),
        "module_hooks": len(module_module._global_forward_hooks) + len(module_module._global_forward_pre_hooks)
                        + len(module_module._global_backward_hooks),
        "function_modes": torch._C._len_torch_function_stack(),
    }

BEFORE = {}

def pytest_sessionstart(session):
    torch.manual_seed(1234)
    BEFORE.update(_snapshot())

def pytest_unconfigure(config):
    after = _snapshot()
    with open("state.json", "w") as handle:
        json.dump({"before": BEFORE, "after": after}, handle)
'''

SETUPS = '''
import torch
from torch import nn
from pytest_traincheck import Training

def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return [(x[i:i + 16], (x[i:i + 16, 0] > 0).long()) for i in (0, 16)]

def good_step(model, batch, optimizer, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model(batch[0]), batch[1])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss

def stale_step(model, batch, optimizer, loss_fn):
    loss = loss_fn(model(batch[0]), batch[1])
    loss.backward()
    optimizer.step()
    return loss

def raising_step(model, batch, optimizer, loss_fn):
    torch.set_grad_enabled(False)  # user code that changes global state, then raises
    raise RuntimeError("user bug")

def _training(name, step):
    return Training(name=name, model=lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                    loss_fn=nn.CrossEntropyLoss(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                    data=_data(), step=step)

def make():
    return [_training("good", good_step), _training("stale", stale_step), _training("raises", raising_step)]
'''


def test_session_restores_process_state(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SNAPSHOT)
    pytester.makepyfile(setups=SETUPS)
    pytester.makefile(".toml", pyproject='[tool.traincheck.sanity]\ntrainings = ["setups:make"]\n')
    result = pytester.runpytest_subprocess("--train-sanity", "-p", "no:cacheprovider",
                                           "--train-sanity-select", "TRN101,TRN105,TRN106,TRN601,TRN603")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 2  # the stale step fails TRN101; the raising step errors
    state = json.loads((pytester.path / "state.json").read_text())
    assert state["after"] == state["before"]

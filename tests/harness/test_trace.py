"""The instrumentation's cheap paths give the same facts as looking at every tensor would."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Verdict
from pytest_traincheck.harness.runner import prepare, run_check
from pytest_traincheck.harness.trace import Trace


def _verdict(code: str, **overrides: Any) -> Verdict:
    return run_check(code, prepare(ex.setup(**overrides))).verdict


# -- stale gradients: identity + version counter, confirmed by the norm ------------------------------
def _step_clearing_with(clear: Callable[[nn.Module, Any], None]) -> Callable[..., Any]:
    """Return a training step that clears the gradients with ``clear(model, optimizer)`` first."""
    def step(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
        inputs, targets = batch
        clear(model, optimizer)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _clear_through_data(model: nn.Module, optimizer: Any) -> None:
    """Legacy clearing through `.data`, which autograd's version counter does not see."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.data.zero_()


_zero_through_data = _step_clearing_with(_clear_through_data)
_zero_in_place = _step_clearing_with(lambda model, optimizer: optimizer.zero_grad(set_to_none=False))
_never_zeroed = _step_clearing_with(lambda model, optimizer: None)


def test_gradients_cleared_through_data_are_not_stale() -> None:
    assert _verdict("TRN101", step=_zero_through_data) is Verdict.PASS


def test_gradients_zeroed_in_place_are_not_stale() -> None:
    assert _verdict("TRN101", step=_zero_in_place) is Verdict.PASS


def test_gradients_never_cleared_are_stale() -> None:
    assert _verdict("TRN101", step=_never_zeroed) is Verdict.FAIL


# -- losses reached through a copy the user's module holds ------------------------------------------------
def _softmax_into_imported_loss(model: nn.Module, batch: Any, optimizer: Any, loss_fn: Any) -> Any:
    inputs, targets = batch
    optimizer.zero_grad()
    loss = cross_entropy(torch.softmax(model(inputs), dim=1), targets)  # noqa: TRN201 (the mistake under test)
    loss.backward()
    optimizer.step()
    return loss


def test_a_loss_imported_by_name_is_seen() -> None:
    assert _verdict("TRN201", step=_softmax_into_imported_loss) is Verdict.FAIL
    assert cross_entropy is torch.nn.functional.cross_entropy  # the copy is given back afterwards


# -- the wrappers ---------------------------------------------------------------------------------------------
def _trace() -> Trace:
    model = ex.MLP()
    return Trace(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda: None)


def test_wrappers_are_removed_whatever_order_traces_close_in() -> None:
    originals = (torch.nn.functional.cross_entropy, torch.nn.utils.clip_grad_norm_)
    first, second = _trace(), _trace()
    assert torch.nn.functional.cross_entropy is not originals[0]
    first.close()
    assert torch.nn.functional.cross_entropy is not originals[0]  # the second trace still listens
    second.close()
    assert (torch.nn.functional.cross_entropy, torch.nn.utils.clip_grad_norm_) == originals


def test_every_open_trace_hears_a_loss_call() -> None:
    first, second = _trace(), _trace()
    try:
        nn.CrossEntropyLoss()(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
        assert [c.kind for c in first.losses] == [c.kind for c in second.losses] == ["cross_entropy"]
    finally:
        second.close()
        first.close()


# -- step facts from fused norms --------------------------------------------------------------------------------
def _one_step(grads: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
              bias_dtype: Optional[torch.dtype] = None) -> Any:
    model = nn.Linear(2, 1).to(dtype)
    model.bias.data = model.bias.data.to(bias_dtype or dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trace = Trace(model, optimizer, lambda: None)
    try:
        for name, p in model.named_parameters():
            p.grad = grads[name].clone()
        optimizer.step()
        return trace.steps[-1]
    finally:
        trace.close()


def test_tiny_gradients_whose_norm_underflows_are_not_zero() -> None:
    record = _one_step({"weight": torch.full((1, 2), 1e-30), "bias": torch.zeros(1)})
    assert record.grads_zero == ["bias"]


def test_non_finite_gradients_are_named() -> None:
    record = _one_step({"weight": torch.tensor([[1.0, float("nan")]]), "bias": torch.tensor([float("inf")])})
    assert record.grads_nonfinite == ["weight", "bias"]


def test_huge_finite_gradients_are_not_called_non_finite() -> None:
    record = _one_step({"weight": torch.full((1, 2), 3e38), "bias": torch.ones(1)})
    assert record.grads_nonfinite == [] and record.grads_zero == []


def test_float64_and_mixed_precision_gradients_are_measured() -> None:
    full = _one_step({"weight": torch.tensor([[3.0, 4.0]], dtype=torch.float64),
                      "bias": torch.tensor([0.0], dtype=torch.float64)}, dtype=torch.float64)
    assert full.norm_at_step == 5.0 and full.grads_zero == ["bias"]
    mixed = _one_step({"weight": torch.tensor([[3.0, 4.0]], dtype=torch.float64),
                       "bias": torch.tensor([12.0], dtype=torch.bfloat16)}, dtype=torch.float64,
                      bias_dtype=torch.bfloat16)
    assert mixed.norm_at_step == 13.0


def test_a_float64_setup_runs_its_checks() -> None:
    def factory() -> nn.Module:
        return ex.MLP().double()

    data = [(ex.blobs()[0].double(), ex.blobs()[1])]
    for code in ("TRN101", "TRN102", "TRN602", "TRN603"):
        assert _verdict(code, model=factory, data=data) is Verdict.PASS, code


class _SparseBag(nn.Module):
    """Token ids -> summed sparse embeddings -> class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(20, 8, mode="sum", sparse=True)
        self.head = nn.Linear(8, ex.CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def _token_data() -> list:
    labels = torch.arange(12) % ex.CLASSES
    tokens = torch.stack([labels * 6 + offset for offset in range(4)], dim=1) % 20
    return [(tokens, labels)]


def _sparse_setup(step: Any) -> Any:
    return ex.setup(model=_SparseBag, data=_token_data(), step=step,
                    optimizer=lambda params: torch.optim.SGD(params, lr=0.1))


def test_sparse_gradients_are_measured() -> None:
    for code in ("TRN101", "TRN102", "TRN602"):
        assert run_check(code, prepare(_sparse_setup(ex.good_step))).verdict is Verdict.PASS, code
    assert run_check("TRN101", prepare(_sparse_setup(_never_zeroed))).verdict is Verdict.FAIL

"""TRN403: the model mixes samples of a batch, e.g. `.view()` used where a transpose was meant (D14)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from pytest_traincheck.harness import batch as tb
from pytest_traincheck.harness import examples as ex
from pytest_traincheck.harness.check import Check, CheckResult
from pytest_traincheck.harness.core import Harness, call_user, has_forward
from pytest_traincheck.harness.parts import is_several, part_calls

LEAK = 1e-6  # relative gradient reaching other samples; float32 round-off stays far below
PROBES = 3  # samples whose output is differentiated (first, middle, last)


class SeqFirstGRU(nn.Module):
    """Classify (batch, time, features) sequences with a time-first GRU."""

    def __init__(self, buggy: bool = False) -> None:
        super().__init__()
        self.buggy = buggy
        self.rnn = nn.GRU(4, 16)  # expects (time, batch, features)
        self.head = nn.Linear(16, ex.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The bug: view reinterprets memory instead of swapping the axes, so "time step t of
        # sample b" is really a piece of another sample; transpose(0, 1) moves the axes.
        x = x.view(x.shape[1], x.shape[0], x.shape[2]) if self.buggy else x.transpose(0, 1)
        out, _ = self.rnn(x)
        return self.head(out[-1])


class TransposeReshapeMLP(ex.MLP):
    """An MLP whose hidden activations go through `.t().reshape(...)`, scrambling samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(h.t().reshape(h.shape))


class Embedder(nn.Module):
    """Embed token ids (batch, time), mean-pool over time, classify."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.head = nn.Linear(8, ex.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x).mean(1))


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 10, (ex.SAMPLES, 5), generator=g), torch.arange(ex.SAMPLES) % ex.CLASSES


class ViewAsPermute(Check):
    """Fail when the gradient of one sample's output reaches the inputs of other samples (eval mode).

    ## What it measures
    In eval mode (so BatchNorm does not couple samples on purpose), differentiates the output of 3
    samples of the batch (first, middle, last) with respect to the whole input batch, and measures
    how much gradient reaches the other samples.
    A dict or list of models (a GAN), or a model without its own forward() (a LightningModule that
    calls `self.net` in training_step), is judged model by model (its direct submodules), each called
    with the arguments the user's step first gave it (the generator its noise, the discriminator its
    samples).

    ## Why it matters
    `x.view(batch, seq, ...)` where `x.transpose(0, 1)` was meant, or a reduction over the wrong
    dimension, mixes samples: the model learns from its neighbours in the batch, trains fine, and
    fails at batch size 1 or in production.

    ## Thresholds
    Fails when the relative gradient reaching other samples exceeds 1e-6 (float32 round-off stays
    far below). Fixed; turn the check off with `--train-sanity-ignore TRN403` (or `ignore` in
    `[tool.traincheck.sanity]`).

    ## Known problems
    Models that mix samples on purpose (attention across the batch, contrastive losses inside
    forward) are flagged: ignore the check there.

    ## Example
    ```python
    h = self.rnn(x.view(x.size(1), x.size(0), -1))   # batch-first data, seq-first RNN
    ```
    """

    CODE = "TRN403"
    PASSING = (lambda: ex.setup(), lambda: ex.setup(model=lambda: ex.MLP(batchnorm=True, dropout=0.5)),
               lambda: ex.setup(model=SeqFirstGRU, data=[ex.sequences()]),
               lambda: ex.setup(model=Embedder, data=[_tokens()]), lambda: ex.two_models())
    FAILING = (lambda: ex.setup(model=lambda: SeqFirstGRU(buggy=True), data=[ex.sequences()]),
               lambda: ex.setup(model=TransposeReshapeMLP),
               lambda: ex.two_models(TransposeReshapeMLP))

    def run(self, h: Harness) -> CheckResult:
        model = h.model().eval()  # BatchNorm legitimately mixes samples in train mode
        if is_several(model) or not has_forward(model):  # only the step knows how to call its models
            return self._each_model(h)
        x = h.inputs()
        if not isinstance(x, torch.Tensor) or x.ndim == 0:
            return self.skipped("the inputs of the batch are not one tensor (declare `Training(inputs=...)` to "
                                "point at the tensor that carries the samples)")
        if len(x) < 2:
            return self.skipped("the fixed batch has one sample; batch independence needs at least two")
        leak = self._measure(model, x)
        if isinstance(leak, CheckResult):
            return leak
        return self._verdict(leak, len(x))

    def _measure(self, model: nn.Module, x: torch.Tensor, forward: Optional[Callable[[Any], Any]] = None) -> Any:
        leak = self._leak(model, x, forward)
        if not isinstance(leak, CheckResult) and leak[0] > LEAK:
            with _no_tf32():  # TF32 kernels can couple samples by round-off alone
                leak = self._leak(model, x, forward)
        return leak

    def _verdict(self, leak: tuple[float, int, int, str], samples: int, name: Optional[str] = None,
                 judged: Optional[list[str]] = None) -> CheckResult:
        worst, i, j, where = leak
        which = f"model `{name}`: " if name is not None else ""
        facts: dict[str, Any] = dict(relative_leak=worst, samples=samples, measured_on=where)
        if name is not None:
            facts["model"] = name
        if worst > LEAK:
            return self.failed(
                f"{which}in eval mode the output of sample {i} has a gradient on the {where} of sample {j} "
                f"(norm {worst:.2e} of the largest per-sample gradient; expected 0, threshold {LEAK:g}): the model "
                "mixes samples of the batch, typically `.view()`/`.reshape()` used to swap axes; use "
                "`.permute()`/`.transpose()` to move axes and `.reshape()` only to merge them",
                sample=i, other_sample=j, **facts)
        if judged:
            which = f"model `{judged[0]}`" if len(judged) == 1 else \
                f"each of {len(judged)} models ({', '.join(f'`{n}`' for n in judged)})"
            return self.passed(f"{which}: the outputs of "
                               f"{min(PROBES, samples)} samples depend on their own inputs only, called as the step "
                               f"calls them (max relative leak {worst:.1e})", models=len(judged), **facts)
        return self.passed(f"{min(PROBES, samples)} samples' outputs depend on their own {where} only "
                           f"(max relative leak {worst:.1e} over {samples} samples)", **facts)

    def _each_model(self, h: Harness) -> CheckResult:
        """Judge each model of a dict or list on the arguments the user's step first called it with."""
        with h.session() as s:
            calls = part_calls(s.model, s.step)
        s.model.eval()
        judged: list[str] = []
        worst: Optional[tuple[tuple[float, int, int, str], int]] = None
        reasons = []
        for call in calls:
            x = call.tensor()
            if x is None or len(x) < 2:
                reasons.append(f"`{call.name}` got no batched tensor of at least 2 samples")
                continue
            leak = self._measure(call.module, x, call.call)
            if isinstance(leak, CheckResult):
                reasons.append(f"`{call.name}`: {leak.message}")
                continue
            if leak[0] > LEAK:
                return self._verdict(leak, len(x), call.name)
            judged.append(call.name)
            if worst is None or leak[0] >= worst[0][0]:
                worst = (leak, len(x))
        if worst is None:
            return self.skipped("no model the step calls could be judged on what the step gave it: "
                                + ("; ".join(reasons) or "the step called none of them"))
        return self._verdict(worst[0], worst[1], judged=judged)

    def _leak(self, model: nn.Module, x: torch.Tensor, forward: Optional[Callable[[Any], Any]] = None) -> Any:
        """Return (worst relative leak, sample, other sample, what was differentiated) or a SKIP result."""
        with _differentiable_input(model, x) as probe:
            out = call_user("the model's forward", forward or model, probe.leaf if probe.leaf is not None else x)
            out = tb.logits_of(out, len(x))
            if probe.leaf is None:
                return self.skipped("the inputs are integers (token ids) and no nn.Embedding output carries them "
                                    "batch first, so there is nothing to differentiate for batch independence")
            if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != len(x) or not out.requires_grad:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                return self.skipped(f"the model's output {shape} has no differentiable batch dimension first "
                                    f"matching the {len(x)} inputs")
            return (*_worst_leak(out, probe.leaf), probe.where)


class _Probe:
    """The tensor whose per-sample gradients are compared, and what it is."""

    def __init__(self, leaf: Optional[torch.Tensor], where: str) -> None:
        self.leaf, self.where = leaf, where


def _worst_leak(out: torch.Tensor, leaf: torch.Tensor) -> tuple[float, int, int]:
    n = out.shape[0]
    worst, pair = 0.0, (0, 1)
    for i in sorted({0, n // 2, n - 1})[:PROBES]:
        (grad,) = torch.autograd.grad(out[i].sum(), leaf, retain_graph=True, allow_unused=True)
        if grad is None:
            continue
        per_sample = grad.detach().float().flatten(1).norm(dim=1)
        total = float(per_sample.max())
        if total == 0:
            continue  # this output ignores every input (dead units): no evidence either way
        others = per_sample.clone()
        others[i] = 0
        j = int(others.argmax())
        if float(others[j]) / total > worst:
            worst, pair = float(others[j]) / total, (i, j)
    return worst, pair[0], pair[1]


@contextlib.contextmanager
def _differentiable_input(model: nn.Module, x: torch.Tensor) -> Iterator[_Probe]:
    """Yield a float leaf copy of float inputs; for token ids, the first embedding output of exactly them."""
    if x.is_floating_point() or x.is_complex():
        yield _Probe(x.detach().clone().requires_grad_(True), "inputs")
        return
    probe = _Probe(None, "embedded inputs")

    def capture(module: nn.Module, args: Any, output: Any) -> Any:
        ids = args[0] if args else None
        if (probe.leaf is None and isinstance(output, torch.Tensor) and output.is_floating_point()
                and isinstance(ids, torch.Tensor) and ids.shape == x.shape and torch.equal(ids, x)):
            probe.leaf = output.detach().clone().requires_grad_(True)
            return probe.leaf  # downstream layers now differentiate to this tensor
        return None

    handles = [m.register_forward_hook(capture) for m in model.modules()
               if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    try:
        yield probe
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

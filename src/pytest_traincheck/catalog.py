"""The pitfall catalogue: one code, slug, summary and fix per training mistake.

Static rules (``rules/``) and dynamic checks (``checks/``) both report these
codes, so ``--select``/``--ignore``, ``# noqa`` and ``[tool.traincheck]`` mean
the same thing in ``traincheck lint`` and in ``pytest --train-sanity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence


@dataclass(frozen=True)
class Pitfall:
    """One catalogued training mistake."""

    code: str
    slug: str
    summary: str
    fix: str
    seed: str = ""  # the seed guide's advice this pitfall comes from, if any


def _p(code: str, slug: str, summary: str, fix: str, seed: str = "") -> Pitfall:
    return Pitfall(code, slug, summary, fix, seed)


_ENTRIES = [
    _p("TRN000", "syntax-error", "The file could not be parsed.",
       "Fix the syntax error; no other rule can check this file until it parses."),
    _p("TRN001", "internal-error", "A rule raised an internal error on this file.",
       "Report the file to traincheck; the other rules still ran."),
    _p("TRN002", "unsupported-syntax",
       "The file is valid Python, but libcst (the linter's parser) cannot read it, so it was not linted.",
       "Nothing is wrong with the file; report it to traincheck, or ignore TRN002 for it."),
    # 1xx: the optimisation loop
    _p("TRN101", "missing-zero-grad",
       "Gradients are never cleared between optimizer steps, so each step uses the sum of all past gradients.",
       "Call `optimizer.zero_grad()` once per iteration, before `loss.backward()`.",
       "Remember .zero_grad()"),
    _p("TRN102", "zero-grad-before-step",
       "`zero_grad()` runs between `backward()` and `step()`, so the optimizer steps with zeroed gradients.",
       "Order the loop as zero_grad -> forward -> loss -> backward -> step.",
       "Remember .zero_grad()"),
    _p("TRN103", "step-without-backward",
       "`optimizer.step()` runs before any `backward()` in the iteration, so it applies no (or stale) gradients.",
       "Call `loss.backward()` before `optimizer.step()`.",
       "Remember .zero_grad()"),
    _p("TRN104", "backward-under-no-grad",
       "The loss is computed under `torch.no_grad()`/`inference_mode()`, so `backward()` has no graph to follow.",
       "Compute the training loss outside `torch.no_grad()`."),
    _p("TRN105", "missing-grad-clipping",
       "A recurrent model (RNN/LSTM/GRU) is trained without gradient clipping, so one long sequence can blow the weights up.",
       "Call `torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)` between `backward()` and `step()`.",
       "Clip gradients (when using RNNs, GRUs, and LSTMs)"),
    _p("TRN106", "clip-outside-backward-step",
       "Gradients are clipped before `backward()` or after `step()`, where clipping has no effect on the update.",
       "Clip after `loss.backward()` and before `optimizer.step()`.",
       "Clip gradients (when using RNNs, GRUs, and LSTMs)"),
    _p("TRN107", "deprecated-clip-grad-norm",
       "`clip_grad_norm` (no trailing underscore) is deprecated.",
       "Use the in-place `torch.nn.utils.clip_grad_norm_`.",
       "Clip gradients (when using RNNs, GRUs, and LSTMs)"),
    _p("TRN108", "scheduler-step-misordered",
       "The learning-rate scheduler is stepped before `optimizer.step()` (the schedule's first value is skipped) "
       "or never stepped, so the learning rate does not follow the schedule.",
       "Call `scheduler.step()` after `optimizer.step()`, once per step (or per epoch for epoch schedulers)."),
    _p("TRN109", "graph-cut-before-loss",
       "The loss's graph does not reach the parameters (`.detach()`, `.data`, `.item()` re-wrapped, `torch.no_grad()`, "
       "a new `requires_grad_()` leaf), so `backward()` runs but no parameter gets a gradient.",
       "Compute the loss from the model's output without `.detach()`, `.data`, `.item()` or `torch.no_grad()`; "
       "never rebuild it as a new tensor with `requires_grad=True`."),
    _p("TRN110", "clip-before-unscale",
       "With a `GradScaler`, gradients are clipped before `scaler.unscale_(optimizer)`: they are still multiplied by "
       "the loss scale, so the threshold is effectively raised by that factor and nothing is clipped.",
       "Call `scaler.unscale_(optimizer)` after `scaler.scale(loss).backward()` and before clipping, then "
       "`scaler.step(optimizer)`."),
    # 2xx: model and loss
    _p("TRN201", "softmax-before-cross-entropy",
       "Softmax output is fed to cross entropy, which applies log-softmax itself: gradients shrink and training stalls.",
       "Feed raw logits to `nn.CrossEntropyLoss`; apply softmax only for reporting probabilities.",
       "Do NOT use softmax() at the output layer when use CrossEntropy()"),
    _p("TRN202", "bias-before-batchnorm",
       "A Conv/Linear layer with a bias feeds BatchNorm, which subtracts the mean and makes the bias a wasted parameter.",
       "Create the layer with `bias=False`.",
       "Bias when using BatchNorm"),
    _p("TRN203", "softmax-without-dim",
       "Softmax is called without `dim`, so PyTorch guesses the dimension (and warns).",
       "Pass `dim=` explicitly, usually `dim=1` (or `-1`) for class scores."),
    _p("TRN204", "sigmoid-before-bce",
       "Sigmoid output is fed to `BCELoss`, which is numerically unstable for confident predictions.",
       "Drop the sigmoid and use `nn.BCEWithLogitsLoss` on the logits."),
    _p("TRN205", "nll-loss-on-logits",
       "`NLLLoss` receives outputs that are not log-probabilities.",
       "Apply `log_softmax(dim=1)` before `NLLLoss`, or use `CrossEntropyLoss` on the logits."),
    _p("TRN206", "forward-called-directly",
       "`module.forward(x)` bypasses hooks and autocast wrappers registered on the module.",
       "Call the module itself: `model(x)`."),
    _p("TRN207", "missing-super-init",
       "An `nn.Module` subclass defines `__init__` without calling `super().__init__()`; assigning a layer then fails.",
       "Call `super().__init__()` first in `__init__`."),
    _p("TRN208", "unknown-torch-api",
       "The attribute does not exist in torch, so the line raises `AttributeError` when it runs.",
       "Use the real name (for example `nn.Linear`, `torch.einsum`)."),
    _p("TRN209", "modules-in-plain-list",
       "Layers kept in a plain list or dict are not registered: `model.parameters()` misses them and they are never trained.",
       "Use `nn.ModuleList` / `nn.ModuleDict`."),
    # 3xx: train / eval discipline
    _p("TRN301", "eval-without-train-toggle",
       "The evaluation function switches the model to eval mode and never switches it back, so training continues without dropout/BatchNorm updates.",
       "Call `model.train()` at the end of the evaluation function (or restore the previous mode).",
       "Set training and evaluation mode"),
    _p("TRN302", "evaluation-in-train-mode",
       "Evaluation runs in training mode: dropout stays on and BatchNorm uses and updates batch statistics.",
       "Call `model.eval()` before evaluating.",
       "Set training and evaluation mode"),
    _p("TRN303", "evaluation-with-grad",
       "Evaluation runs with gradient tracking on, wasting memory and time on graphs nobody uses.",
       "Wrap the evaluation loop in `with torch.no_grad():` (or `torch.inference_mode()`)."),
    _p("TRN304", "train-step-in-eval-mode",
       "The training step runs while the model is in eval mode.",
       "Call `model.train()` before training.",
       "Set training and evaluation mode"),
    _p("TRN305", "loss-accumulated-as-tensor",
       "The loss tensor is accumulated across iterations, keeping every iteration's graph alive.",
       "Accumulate `loss.item()` (or `loss.detach()`)."),
    # 4xx: data
    _p("TRN401", "train-loader-not-shuffled",
       "The training data is not shuffled, so every epoch sees the batches in the same order.",
       "Pass `shuffle=True` (or a random sampler) to the training `DataLoader`.",
       "Shuffle at dataloader"),
    _p("TRN402", "inputs-not-normalized",
       "Inputs are not normalized to zero mean and unit variance.",
       "Add `transforms.Normalize(mean, std)` after `ToTensor()`.",
       "Normalize data"),
    _p("TRN403", "view-as-permute",
       "`.view()` reinterprets memory; after `transpose`/`permute` it mixes samples or features instead of moving axes.",
       "Use `.permute(...)`/`.transpose(...)` to move axes, then `.reshape(...)` (or `.contiguous().view(...)`) only to merge them.",
       "Distinguish between view and permute"),
    _p("TRN404", "augmentation-on-eval-data",
       "Random augmentation is applied to evaluation data, so the metric is noisy and biased.",
       "Use deterministic transforms (resize, center crop, normalize) for validation and test data.",
       "Correct data augmentation"),
    _p("TRN405", "distributed-sampler-without-set-epoch",
       "`DistributedSampler` is used without `set_epoch(epoch)`, so every epoch uses the same order.",
       "Call `sampler.set_epoch(epoch)` at the start of each epoch."),
    _p("TRN406", "train-test-overlap",
       "The same samples appear in the training and the evaluation data.",
       "Split the data once into disjoint train/val/test sets (deduplicate first).",
       "Train/Val/Test Split"),
    _p("TRN407", "class-imbalance",
       "The label distribution is heavily skewed.",
       "Weight the loss (`CrossEntropyLoss(weight=...)`) or oversample with `WeightedRandomSampler`.",
       "Deal with imbalanced datasets"),
    _p("TRN408", "labels-out-of-range",
       "Labels are outside `[0, num_classes)` or have the wrong dtype for the loss.",
       "Map labels to integers `0..C-1` of dtype `torch.long`."),
    # 5xx: checkpoints
    _p("TRN501", "torch-load-discarded",
       "`torch.load(...)` is called and its result thrown away, so nothing is restored.",
       "Assign the result and load it: `checkpoint = torch.load(path); model.load_state_dict(checkpoint[...])`.",
       "Save and Load model"),
    _p("TRN502", "torch-load-unsafe",
       "`torch.load` unpickles arbitrary objects unless `weights_only=True`; a malicious checkpoint runs code.",
       "Pass `weights_only=True` (the default from torch 2.6)."),
    _p("TRN503", "checkpoint-not-resumable",
       "Saving and loading the checkpoint does not reproduce the next training step.",
       "Save and load both `model.state_dict()` and `optimizer.state_dict()` (and the scheduler's).",
       "Save and Load model"),
    # 6xx: optimisation health (dynamic)
    _p("TRN601", "cannot-overfit-single-batch",
       "The training step cannot drive the loss of one fixed batch near zero.",
       "Debug the model, loss and step on this single batch before training on the full data.",
       "Overfit a single batch first"),
    _p("TRN602", "parameters-not-updated",
       "Some trainable parameters get no gradient, are not updated by a step, or are missing from the optimizer.",
       "Make sure every trainable parameter is used in forward and passed to the optimizer."),
    _p("TRN603", "non-finite-values",
       "NaN or Inf appears in the loss, the outputs or the gradients.",
       "Find the first module that produces it: lower the learning rate, guard log/div/sqrt, check the inputs."),
    _p("TRN604", "initial-loss-off",
       "The loss at initialization is far from its expected value (ln C for C-class cross entropy).",
       "Check the output layer's initialization and that the loss receives logits."),
    _p("TRN605", "gradient-flow",
       "Per-layer gradient norms vanish or explode.",
       "Check the initialization, activations and normalization of the layers named in the evidence."),
    _p("TRN606", "dead-relu-units",
       "Most units of a ReLU layer are zero for every sample of the batch.",
       "Lower the learning rate, check the initialization, or use LeakyReLU/GELU."),
    _p("TRN607", "loss-ignores-inputs",
       "The model trains no better on real inputs than on zeroed inputs.",
       "Check that the inputs reach the model (and that targets do not leak into them)."),
    # 7xx: distributed training (TRN701-TRN709 dynamic, TRN711-TRN719 static)
    _p("TRN701", "replicas-diverge",
       "After a few distributed steps the ranks hold different parameters or buffers, so they no longer train one model.",
       "Let DDP all-reduce every gradient (no `no_sync()` on the step that updates, no per-rank gradient edits, "
       "`optimizer.step()` on every rank) and keep `broadcast_buffers=True` or use SyncBatchNorm."),
    _p("TRN702", "ddp-step-not-equivalent",
       "One distributed step over the ranks' shards does not move the parameters like one single-process step "
       "over their concatenation.",
       "Do not divide the loss by the world size (DDP already averages gradients), do not edit gradients per rank "
       "after `backward()`, and leave `no_sync()` on the step that updates."),
    _p("TRN703", "data-not-sharded",
       "The ranks do not see disjoint shards that cover the dataset, or see them in the same order every epoch.",
       "Build the training loader with `DistributedSampler(dataset)` (no `shuffle=True` on the DataLoader) and call "
       "`sampler.set_epoch(epoch)` at the start of each epoch."),
    _p("TRN704", "eval-not-reduced",
       "The distributed evaluation result differs from the single-process result on the whole evaluation set: "
       "one rank's shard is reported, or the sampler's padded duplicates are counted.",
       "Reduce sums and counts across ranks (`dist.all_reduce`) or gather the predictions, and drop the samples a "
       "`DistributedSampler` pads (count `len(dataset)` samples, not `len(sampler) * world_size`)."),
    _p("TRN705", "checkpoint-written-by-every-rank",
       "Several ranks write the same checkpoint file at once, which can leave a corrupt or mixed file.",
       "Save only on rank 0 (`if dist.get_rank() == 0:`), then `dist.barrier()` before any rank loads it."),
    _p("TRN706", "checkpoint-not-portable",
       "A checkpoint saved from the DDP-wrapped model does not load into the plain model (its keys start with "
       "`module.`), or one saved from the plain model does not load back into the wrapped one.",
       "Save `model.module.state_dict()` (the unwrapped model) and load into `model.module`; or strip the prefix "
       "with `torch.nn.modules.utils.consume_prefix_in_state_dict_if_present`."),
    _p("TRN711", "loader-without-distributed-sampler",
       "A DataLoader in code that initialises a process group has no DistributedSampler, so every rank trains "
       "on the whole dataset.",
       "Pass `sampler=DistributedSampler(dataset)` (and no `shuffle=True`) to the training DataLoader."),
    _p("TRN712", "save-not-rank-guarded",
       "`torch.save` runs on every rank of a distributed program, so all ranks write the same file at once.",
       "Save under `if dist.get_rank() == 0:` (or `if rank == 0:`) and `dist.barrier()` before loading."),
    _p("TRN713", "load-without-map-location",
       "`torch.load` without `map_location` in distributed code puts every rank's copy on the GPU it was saved "
       "from (usually cuda:0), crowding one device.",
       "Pass `map_location` (e.g. `map_location=f\"cuda:{local_rank}\"` or `\"cpu\"`)."),
    _p("TRN714", "batchnorm-without-syncbn",
       "A model with BatchNorm is wrapped in DistributedDataParallel without SyncBatchNorm conversion, so each "
       "rank normalises with its own small-batch statistics.",
       "Convert before wrapping: `model = nn.SyncBatchNorm.convert_sync_batchnorm(model)` (when per-GPU "
       "batches are small)."),
    _p("TRN715", "loss-divided-by-world-size",
       "The loss is divided by the world size before `backward()` under DDP, which already averages gradients "
       "over the ranks: the gradients shrink by the world size.",
       "Drop the division: DDP's all-reduce averages the gradients."),
    # 9xx: API hygiene
    _p("TRN901", "deprecated-torch-api",
       "A deprecated torch API is used.",
       "Use the documented replacement."),
]

CATALOG: dict[str, Pitfall] = {p.code: p for p in _ENTRIES}
SLUGS: dict[str, str] = {p.slug: p.code for p in _ENTRIES}


def get(code: str) -> Pitfall:
    """Return the catalogue entry for ``code`` (raises KeyError)."""
    return CATALOG[code]


def matches(code: str, patterns: Iterable[str]) -> bool:
    """True if ``code`` starts with any selector (``TRN``, ``TRN1``, ``TRN101``, ``ALL``)."""
    return any(p == "ALL" or code.startswith(p) for p in patterns)


def is_valid_selector(selector: str) -> bool:
    """True if ``selector`` is ``ALL`` or a prefix of at least one known code."""
    return selector == "ALL" or any(code.startswith(selector) for code in CATALOG)


class SelectorError(ValueError):
    """A code list names something that is not a code or prefix of the catalogue."""


def parse_codes(value: Any, where: str) -> list[str]:
    """Return the upper-cased codes of a list or a comma/space-separated string; raise naming ``where``.

    The one parser of code lists: lint flags, `[tool.traincheck]`, `[tool.traincheck.sanity]`,
    the pytest options and their ini keys.
    """
    items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    codes = []
    for item in items:
        if not isinstance(item, str):
            raise SelectorError(f"{where}: expected codes as strings, got {item!r}")
        code = item.strip().upper()
        if not code:
            continue
        if not is_valid_selector(code):
            raise SelectorError(f"{where}: unknown code or prefix {item.strip()!r} (`traincheck rules` lists them)")
        codes.append(code)
    return codes


def is_selected(code: str, default_on: bool, select: Optional[Sequence[str]] = None,
                ignore: Iterable[str] = (), extend_select: Iterable[str] = ()) -> bool:
    """Decide whether ``code`` runs: the most specific selector wins, ignore wins ties.

    The one selection of lint rules and train-sanity checks. ``select=None`` starts from the
    codes that are on by default; ``extend_select`` adds to the selection either way.
    """
    on = max((len(s) for s in [*(select or ()), *extend_select] if matches(code, [s])), default=-1)
    if select is None and default_on:
        on = max(on, 0)
    off = max((len(s) for s in ignore if matches(code, [s])), default=-1)
    return on >= 0 and on > off

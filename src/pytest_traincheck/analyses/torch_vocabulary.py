"""The torch vocabulary of the static analyses: what a name or a call means to training, each defined once.

Every analysis (loops, dataflow, eval flow, facts) and every rule asks these
questions through this module, so two rules never disagree about the same
code: "is this receiver an optimizer?", "does this `with` turn gradient
tracking off?", "is this call an activation, a wrapper, a method that hands
back its receiver?". Names are matched by qualified name (resolved through the
file's imports) wherever torch defines them; receivers a user names (``opt``,
``scaler``) are matched by name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Optional

import libcst as cst

from pytest_traincheck.lint.rule import dotted_name, get_arg, is_false, is_true

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.lint.context import FileContext

# -- optimizers ----------------------------------------------------------------------------
_OPT_NAME = re.compile(r"(?i:optim)|(^|_)opts?($|_|\d)|^opt[A-Z]|[a-z]Opt($|_|\d)|^[a-z]?opt[a-z]?$")
_NOT_OPT = re.compile(r"sched|lr_|warmup|option", re.IGNORECASE)
OPTIMIZER_PREFIXES = ("torch.optim.",)


def last_name(name: Optional[str]) -> Optional[str]:
    """Return ``optimizer`` for ``self.optimizer``."""
    return name.rsplit(".", 1)[-1] if name else None


def is_scheduler_like(name: Optional[str]) -> bool:
    """True for names like ``scheduler``, ``lr_sched``, ``warmup`` whose ``step()`` is no optimizer step."""
    return bool(_NOT_OPT.search(last_name(name) or ""))


def optimizer_like(name: Optional[str]) -> bool:
    """True for names like ``optimizer``, ``opt``, ``opt_g``, ``optimizerD``, ``self.optim``."""
    short = last_name(name)
    return bool(short) and bool(_OPT_NAME.search(short)) and not _NOT_OPT.search(short)  # type: ignore[arg-type]


def scaler_like(name: Optional[str]) -> bool:
    """True for a grad scaler (``scaler``, ``self.grad_scaler``), whose ``step(opt)`` steps ``opt``."""
    return "scaler" in (last_name(name) or "").lower()


def steps_an_optimizer(node: Optional[cst.BaseExpression]) -> bool:
    """True if ``<node>.step()`` is an optimizer step: an optimizer-like name, a grad scaler, ``self.optimizers()``."""
    dotted = dotted_name(node) if node is not None else None
    if dotted is None and isinstance(node, cst.Call):  # self.optimizers().step()
        dotted = dotted_name(node.func)
    return optimizer_like(dotted) or scaler_like(dotted)


def is_optimizer_class(qualname: Optional[str]) -> bool:
    """True for ``torch.optim.Adam`` (a class right under ``torch.optim``)."""
    qual = qualname or ""
    return qual.startswith(OPTIMIZER_PREFIXES) and qual.count(".") == 2 and qual.rsplit(".", 1)[-1][:1].isupper()


# -- grad mode -----------------------------------------------------------------------------
GRAD_OFF = frozenset({"torch.no_grad", "torch.autograd.no_grad", "torch.autograd.grad_mode.no_grad",
                      "torch.inference_mode", "torch.autograd.grad_mode.inference_mode"})
GRAD_ON = frozenset({"torch.enable_grad", "torch.autograd.enable_grad", "torch.autograd.grad_mode.enable_grad"})
SET_GRAD = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled",
                      "torch.autograd.grad_mode.set_grad_enabled"})
# Last names of calls that switch grad mode or gradient tracking outside a `with` (or compute gradients).
GRAD_SWITCHES = frozenset({"no_grad", "inference_mode", "set_grad_enabled", "enable_grad", "requires_grad_", "grad"})


def grad_mode(context: FileContext, expr: cst.BaseExpression) -> Optional[str]:
    """Return "off"/"on"/"unknown" for a grad-mode context manager or decorator, else None.

    ``torch.no_grad()``, ``@torch.no_grad``, ``torch.inference_mode()`` and
    ``torch.set_grad_enabled(False)`` are "off" however torch was imported
    (``torch.autograd.grad_mode.no_grad`` too); ``inference_mode(False)`` and
    ``enable_grad()`` are "on"; a mode only known at run time is "unknown".
    """
    func = expr.func if isinstance(expr, cst.Call) else expr
    qual = context.qualname(func)
    if qual is None:
        return None
    if qual in GRAD_OFF:
        mode = get_arg(expr, "mode", 0) if isinstance(expr, cst.Call) else None
        if mode is None or is_true(mode.value):
            return "off"
        return "on" if is_false(mode.value) else "unknown"
    if qual in GRAD_ON:
        return "on"
    if qual in SET_GRAD and isinstance(expr, cst.Call):
        mode = get_arg(expr, "mode", 0)
        if mode is None:
            return None
        return "off" if is_false(mode.value) else "unknown"
    return None


def grad_mode_of_all(context: FileContext, exprs: Iterable[cst.BaseExpression]) -> Optional[str]:
    """Return the grad mode in force inside ``with a, b:`` or under decorators ``a``, ``b``: the innermost wins."""
    mode = None
    for expr in exprs:
        mode = grad_mode(context, expr) or mode
    return mode


# -- modules: wrappers, passthrough methods, layers ------------------------------------------
# Calls that wrap a model and run its forward: the model is their first argument.
WRAPPERS = frozenset({"torch.compile", "torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
                      "torch.nn.parallel.DistributedDataParallel"})
# Methods that move or cast a module or a tensor and hand back the same module / the same values.
DEVICE_DTYPE_METHODS = frozenset({"to", "cuda", "cpu", "float", "double", "half", "bfloat16"})
# Module methods that return the module itself.
MODULE_METHODS = DEVICE_DTYPE_METHODS | {"train", "eval", "requires_grad_", "share_memory"}
# Tensor methods that reshape without changing the values (what forward returns keeps its activation).
RESHAPE_METHODS = frozenset({"view", "reshape", "squeeze", "unsqueeze", "flatten", "contiguous", "view_as",
                             "reshape_as", "resize", "resize_as"})
# Methods whose result is, for the analyses, what their receiver was.
PASSTHROUGH_METHODS = MODULE_METHODS | RESHAPE_METHODS


def strip_passthrough(expr: cst.BaseExpression, methods: frozenset[str] = PASSTHROUGH_METHODS) -> cst.BaseExpression:
    """Return ``x`` for ``x.view(-1).float()`` (any chain of ``methods``)."""
    while isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value in methods:
        expr = expr.func.value
    return expr


def strip_wrappers(context: FileContext, expr: Optional[cst.BaseExpression]) -> Optional[cst.BaseExpression]:
    """``Net().to(dev)`` -> ``Net()``; ``nn.DataParallel(Net())`` -> ``Net()``."""
    while isinstance(expr, cst.Call):
        if isinstance(expr.func, cst.Attribute) and expr.func.attr.value in MODULE_METHODS \
                and isinstance(expr.func.value, cst.Call):
            expr = expr.func.value
        elif context.qualname(expr.func) in WRAPPERS and expr.args:
            expr = expr.args[0].value
        else:
            return expr
    return expr


def is_module_subclass_base(qualname: Optional[str]) -> bool:
    """True for ``torch.nn.Module`` (and Lightning's module), the roots of model classes."""
    return qualname in {"torch.nn.Module", "torch.nn.modules.module.Module",
                        "pytorch_lightning.LightningModule", "lightning.LightningModule",
                        "lightning.pytorch.LightningModule"}


RECURRENT_LAYERS = frozenset({"torch.nn.RNN", "torch.nn.LSTM", "torch.nn.GRU",
                              "torch.nn.RNNCell", "torch.nn.LSTMCell", "torch.nn.GRUCell"})
BATCHNORM_LAYERS = frozenset(
    {"torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", "torch.nn.SyncBatchNorm",
     "torch.nn.LazyBatchNorm1d", "torch.nn.LazyBatchNorm2d", "torch.nn.LazyBatchNorm3d"}
)
# Libraries whose ready-made models hold BatchNorm or dropout (ResNet, ViT, BERT...).
_MODAL_LIBRARIES = ("torchvision.models.", "timm.", "transformers.")


def is_mode_dependent(qual: Optional[str]) -> bool:
    """True for a call that builds or applies something whose result depends on train/eval mode.

    Dropout and BatchNorm layers (``nn.Dropout2d``, ``nn.SyncBatchNorm``), their functional forms
    (``F.dropout``, ``F.batch_norm``) and models of the libraries that ship them (torchvision's, timm's).
    """
    if not qual:
        return False
    if qual.startswith(_MODAL_LIBRARIES):
        return True
    if not qual.startswith("torch.nn."):
        return False
    last = qual.rsplit(".", 1)[-1]
    return "Dropout" in last or "BatchNorm" in last or last in ("dropout", "dropout1d", "dropout2d", "dropout3d",
                                                                "alpha_dropout", "feature_alpha_dropout", "batch_norm")


LINEAR_LAYERS = frozenset({"torch.nn.Linear", "torch.nn.LazyLinear"})
# Where the ``bias`` argument sits positionally in each biased layer's constructor.
BIAS_POSITION = {
    "torch.nn.Linear": 2, "torch.nn.LazyLinear": 1, "torch.nn.Conv1d": 7, "torch.nn.Conv2d": 7,
    "torch.nn.Conv3d": 7, "torch.nn.LazyConv1d": 6, "torch.nn.LazyConv2d": 6, "torch.nn.LazyConv3d": 6,
}
BIASED_LAYERS = frozenset(BIAS_POSITION)
# Layers whose output is provably raw scores (never log-probabilities).
RAW_LAYERS = BIASED_LAYERS | {"torch.nn.Bilinear"}

# -- activations and losses ------------------------------------------------------------------
# What the activations that turn scores into probabilities are called, by qualified name.
ACTIVATION_FUNCS = {
    "torch.softmax": "softmax",
    "torch.nn.functional.softmax": "softmax",
    "torch.special.softmax": "softmax",
    "torch.log_softmax": "log_softmax",
    "torch.nn.functional.log_softmax": "log_softmax",
    "torch.special.log_softmax": "log_softmax",
    "torch.sigmoid": "sigmoid",
    "torch.nn.functional.sigmoid": "sigmoid",
    "torch.special.expit": "sigmoid",
}
ACTIVATION_MODULES = {
    "torch.nn.Softmax": "softmax", "torch.nn.LogSoftmax": "log_softmax", "torch.nn.Sigmoid": "sigmoid",
}
ACTIVATION_METHODS = {"softmax": "softmax", "log_softmax": "log_softmax", "sigmoid": "sigmoid"}
SOFTMAX_FUNCS = frozenset(q for q, kind in ACTIVATION_FUNCS.items() if kind in ("softmax", "log_softmax"))
CROSS_ENTROPY = frozenset({"torch.nn.CrossEntropyLoss", "torch.nn.functional.cross_entropy"})


_ORDERED_DICTS = frozenset({"collections.OrderedDict", "typing.OrderedDict", "OrderedDict", "dict"})


def sequential_layers(context: FileContext, call: cst.Call) -> Optional[list[cst.BaseExpression]]:
    """Return the layers of ``nn.Sequential(a, b)`` or ``nn.Sequential(OrderedDict([("a", a), ...]))``, in order.

    None when the layers are not all visible (``*layers``, keywords).
    """
    args = list(call.args)
    if len(args) == 1 and not args[0].star and isinstance(args[0].value, (cst.Call, cst.Dict)):
        named = _named_layers(context, args[0].value)
        if named is not None:
            return named
    if any(a.star or a.keyword is not None for a in args):
        return None
    return [a.value for a in args]


def _named_layers(context: FileContext, expr: cst.BaseExpression) -> Optional[list[cst.BaseExpression]]:
    if isinstance(expr, cst.Dict):
        return [e.value for e in expr.elements if isinstance(e, cst.DictElement)]
    if not isinstance(expr, cst.Call) or (context.qualname(expr.func) or dotted_name(expr.func)) not in _ORDERED_DICTS:
        return None
    if len(expr.args) != 1 or not isinstance(expr.args[0].value, (cst.List, cst.Tuple)):
        return None
    layers = []
    for element in expr.args[0].value.elements:
        pair = element.value
        if not isinstance(pair, cst.Tuple) or len(pair.elements) != 2:
            return None
        layers.append(pair.elements[1].value)
    return layers

"""Shared analysis for the train/eval and data rules (TRN3xx, TRN4xx, TRN5xx, TRN901).

The train/eval rules (TRN301-303) need to know, per function of a file, where
the model is switched with ``.eval()`` / ``.train()``, which loops run a
training step, which code runs under ``torch.no_grad()``, and which functions
call which. ``EvalFlow`` records that as the single traversal walks the file;
it is an ``Analysis``: the engine walks one per file ahead of every rule
deriving from ``EvalFlowRule``. The questions are answered at ``leave_Module``,
when the whole file is known.

The module also holds the name heuristics (is ``val_loader`` evaluation
data?) and the transform helpers of TRN402/TRN404.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional, Union

import libcst as cst

from pytest_traincheck.lint.rule import Analysis, Rule, call_name, dotted_name, get_arg, is_false, receiver
from pytest_traincheck.lint.context import FileContext
from pytest_traincheck.analyses.torch_vocabulary import GRAD_SWITCHES, grad_mode_of_all, steps_an_optimizer

# -- names ---------------------------------------------------------------------------

_EVAL_DATA = re.compile(
    r"(?<![a-z0-9])(test|val|valid|validation|eval|evaluation|holdout)"
    r"(loader|dataloader|dl|set|data|dataset|ds|iter|batches|_[a-z0-9_]*)?(?![a-z0-9])"
)
_MODEL_WORDS = frozenset({
    "model", "net", "network", "encoder", "decoder", "classifier", "backbone", "module", "teacher",
    "student", "clf", "generator", "discriminator",
})
_NOT_MODEL_WORDS = frozenset({
    "get", "build", "create", "load", "make", "init", "save", "set", "to", "parameters", "train", "eval",
    "state", "dict", "named", "forward", "zero", "apply", "register", "summary", "size", "optimizer",
})


def lowered(text: str) -> str:
    """Lower-case a name, splitting camelCase (``valLoader`` -> ``val_loader``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).lower()


def is_eval_name(text: Optional[str]) -> bool:
    """True if a name (or short source text) names evaluation data: ``val_loader``, ``testset``, ``'test'``."""
    return bool(text) and _EVAL_DATA.search(lowered(text or "")) is not None


def is_train_name(text: Optional[str]) -> bool:
    """True if a name names training data: ``train_data``, ``trainset``, ``ds_train`` (not ``pretrained``)."""
    if not text:
        return False
    return any(
        token.startswith("train") and not token.startswith(("trainer", "trainable", "training_args"))
        for token in re.split(r"[^a-z0-9]+", lowered(text))
    )


def looks_like_eval_function(name: str, *, broad: bool = False) -> bool:
    """True for ``evaluate``, ``test``, ``validate``, ``val_epoch``, ``check_accuracy`` (``broad``: ``check*`` too)."""
    tokens = [t for t in lowered(name).split("_") if t]
    prefixes = ("eval", "test", "valid", "accuracy") + (("check",) if broad else ())
    return any(t.startswith(prefixes) or t in ("val", "acc") for t in tokens)


def looks_like_inference_function(name: str) -> bool:
    """True for ``predict``, ``infer``, ``inference``, ``predict_proba``, ``run_inference``."""
    return any(t.startswith(("predict", "infer")) for t in lowered(name).split("_") if t)


def is_model_callee(func: cst.BaseExpression) -> bool:
    """True if a call's callee is named like a model: ``model``, ``self.net``, ``resnet``, ``self``."""
    dotted = dotted_name(func)
    if dotted is None:
        return False
    if dotted == "self":
        return True
    tokens = [t.rstrip("0123456789") for t in lowered(dotted.rsplit(".", 1)[-1]).split("_") if t]
    if not tokens or any(t in _NOT_MODEL_WORDS for t in tokens):
        return False
    return any(t in _MODEL_WORDS or t.endswith(("net", "model")) for t in tokens)


def source_of(context: FileContext, node: cst.CSTNode) -> str:
    """Return the source text of ``node``."""
    return context.module.code_for_node(node)


# -- grad mode -----------------------------------------------------------------------

def is_eval_context(expr: cst.BaseExpression) -> bool:
    """True for a context manager named like it puts a model in eval mode (``eval_mode(model)``)."""
    func = expr.func if isinstance(expr, cst.Call) else expr
    name = lowered((dotted_name(func) or "").rsplit(".", 1)[-1])
    return "eval" in name


def is_mode_switch_name(name: str) -> bool:
    """True for a call named like it switches a model's mode: ``set_eval``, ``eval_mode``, ``val_start``."""
    tokens = [t for t in lowered(name).split("_") if t]
    return "eval" in tokens or (any(t in ("start", "mode") for t in tokens)
                                and any(t in ("val", "valid", "test", "eval", "inference") for t in tokens))


def draws_eval_batch(call: cst.Call, context: FileContext) -> bool:
    """True for ``next(iter(test_loader))``, ``next(enumerate(val_dl))``, ``test_iter.next()``: one evaluation batch."""
    func = call.func
    if isinstance(func, cst.Name) and func.value == "next" and call.args:
        return is_eval_name(source_of(context, call.args[0].value))
    if isinstance(func, cst.Attribute) and func.attr.value in ("next", "__next__") and not call.args:
        return is_eval_name(source_of(context, func.value))
    return False


# -- the per-file train/eval flow ------------------------------------------------------

FuncKey = tuple[str, str]  # (class name or "", function name)


class Loop:
    """A ``for``/``while`` loop and what runs inside it (nested loops and calls included)."""

    def __init__(self, node: Union[cst.For, cst.While], parent: Optional["Loop"], eval_data: bool,
                 no_grad: Optional[cst.CSTNode]) -> None:
        self.node = node
        self.parent = parent
        self.eval_data = eval_data  # iterates something named like evaluation data
        self.no_grad = no_grad  # the innermost grad-disabling with/def around the loop, if any
        self.training = False  # a backward() / optimizer step() runs inside
        self.toggles = False  # a .train() runs inside
        self.evals: list[cst.Call] = []  # .eval() / .train(False) calls inside
        self.callees: set[FuncKey] = set()
        self.model_calls: list[tuple[cst.Call, bool]] = []  # (call, under no_grad)


class Block:
    """An ``if`` statement inside a loop: where real code forwards a test batch every N training steps."""

    def __init__(self, node: cst.If, loop: Loop) -> None:
        self.node = node
        self.loop = loop  # the innermost loop around it
        self.training = False  # a backward() / optimizer step() runs inside
        self.draw = False  # an evaluation batch was drawn in it so far
        self.eval_calls: list[cst.Call] = []  # model calls on an evaluation batch (after a draw, or on ``test_x``)


class CallSite:
    """A call of a function of this file."""

    def __init__(self, key: FuncKey, loops: tuple[Loop, ...], no_grad: bool, eval_before: bool) -> None:
        self.key = key
        self.loops = loops  # enclosing loops of the calling scope, outermost first
        self.no_grad = no_grad
        self.eval_before = eval_before  # the calling scope switched something to eval earlier


class Scope:
    """A function (or the module body) and its train/eval events."""

    def __init__(self, node: Union[cst.FunctionDef, cst.Module], key: Optional[FuncKey], no_grad: bool) -> None:
        self.node = node
        self.key = key
        self.name = key[1] if key else ""
        self.decorated_no_grad = no_grad
        self.withs: list[tuple[cst.With, bool]] = []  # open with-statements: (node, disables grad)
        self.open_loops: list[Loop] = []
        self.loops: list[Loop] = []
        self.evals: list[cst.Call] = []  # .eval() / .train(False) calls
        self.eval_context = False  # a with-statement named like eval mode
        self.toggles = False  # a .train() / .train(True) / .train(mode) call
        self.training = False  # a backward() / optimizer step() call
        self.grad_mentions = False  # touches grad mode or requires_grad some other way
        self.calls: list[CallSite] = []
        self.model_calls: list[cst.Call] = []  # every call of a model-named callee (``model(x)``, ``net.forward(x)``)
        self.no_grad_calls: list[cst.Call] = []  # the model calls made with gradients off
        self.mode_calls = False  # calls something named like a mode switch (``model.val_start()``, ``set_eval``)
        self.open_blocks: list[Block] = []
        self.blocks: list[Block] = []

    def no_grad_node(self) -> Optional[cst.CSTNode]:
        """The innermost grad-disabling with-statement (or this def, if decorated) now open."""
        for node, off in reversed(self.withs):
            if off:
                return node
        return self.node if self.decorated_no_grad else None


class EvalFlow(Analysis):
    """What one file says about train/eval mode, grad mode and its call graph."""

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.reset()

    def reset(self) -> None:
        """Start a fresh traversal."""
        self.classes: list[Optional[str]] = []
        self.scopes: list[Scope] = [Scope(self.context.module, None, False)]
        self.done: list[Scope] = []
        self.finished = False
        self._with_items: set[int] = set()
        self._training: dict[FuncKey, bool] = {}
        self._toggles: dict[FuncKey, bool] = {}
        self._evaluates: dict[FuncKey, bool] = {}

    @property
    def scope(self) -> Scope:
        return self.scopes[-1]

    # -- traversal events ----------------------------------------------------------------
    def visit_Module(self, node: cst.Module) -> None:
        self.reset()

    def leave_Module(self, original_node: cst.Module) -> None:
        self.finish()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        cls = self.classes[-1] if self.classes and self.classes[-1] is not None else ""
        no_grad = grad_mode_of_all(self.context, (d.decorator for d in node.decorators)) == "off"
        self.scopes.append(Scope(node, (cls, node.name.value), no_grad))
        self.classes.append(None)  # a nested def is not a method

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.done.append(self.scopes.pop())
        self.classes.pop()

    def visit_For(self, node: cst.For) -> None:
        self._enter_loop(node)

    def leave_For(self, original_node: cst.For) -> None:
        self.scope.open_loops.pop()

    def visit_While(self, node: cst.While) -> None:
        self._enter_loop(node)

    def leave_While(self, original_node: cst.While) -> None:
        self.scope.open_loops.pop()

    def _enter_loop(self, node: Union[cst.For, cst.While]) -> None:
        scope = self.scope
        target = node.iter if isinstance(node, cst.For) else node.test
        parent = scope.open_loops[-1] if scope.open_loops else None
        loop = Loop(node, parent, is_eval_name(source_of(self.context, target)), scope.no_grad_node())
        scope.open_loops.append(loop)
        scope.loops.append(loop)

    def visit_If(self, node: cst.If) -> None:
        scope = self.scope
        if scope.open_loops:
            block = Block(node, scope.open_loops[-1])
            scope.open_blocks.append(block)
            scope.blocks.append(block)

    def leave_If(self, original_node: cst.If) -> None:
        blocks = self.scope.open_blocks
        if blocks and blocks[-1].node is original_node:
            blocks.pop()

    def visit_With(self, node: cst.With) -> None:
        scope = self.scope
        scope.withs.append((node, grad_mode_of_all(self.context, (item.item for item in node.items)) == "off"))
        self._with_items.update(id(item.item) for item in node.items)
        if any(is_eval_context(item.item) for item in node.items):
            scope.eval_context = True

    def leave_With(self, original_node: cst.With) -> None:
        self.scope.withs.pop()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if node.attr.value == "requires_grad":
            self.scope.grad_mentions = True

    def visit_Call(self, node: cst.Call) -> None:
        scope = self.scope
        name = call_name(node)
        func = node.func
        if name in GRAD_SWITCHES and id(node) not in self._with_items:
            scope.grad_mentions = True
        if isinstance(func, cst.Attribute) and self.context.qualname(func) is None:
            self._method_call(scope, node, name or "", receiver(node))
        elif isinstance(func, cst.Name):
            self._add_call(scope, ("", func.value))
        if name and name not in ("eval", "train") and is_mode_switch_name(name):
            scope.mode_calls = True
        if scope.open_blocks and draws_eval_batch(node, self.context):
            for block in scope.open_blocks:
                block.draw = True
        callee = func.value if isinstance(func, cst.Attribute) and func.attr.value == "forward" else func
        if is_model_callee(callee) and self.context.qualname(callee) is None:
            if dotted_name(callee) != "self":
                scope.model_calls.append(node)
            under = scope.no_grad_node() is not None
            if under:
                scope.no_grad_calls.append(node)
            for loop in scope.open_loops:
                loop.model_calls.append((node, under))
            on_eval = bool(node.args) and is_eval_name(source_of(self.context, node.args[0].value))
            for block in scope.open_blocks:
                if block.draw or on_eval:
                    block.eval_calls.append(node)

    def _method_call(self, scope: Scope, node: cst.Call, name: str, recv: Optional[cst.BaseExpression]) -> None:
        if name == "backward" or (name == "step" and steps_an_optimizer(recv)):
            scope.training = True
            for loop in scope.open_loops:
                loop.training = True
            for block in scope.open_blocks:
                block.training = True
        elif name == "eval" and not node.args:
            scope.evals.append(node)
            for loop in scope.open_loops:
                loop.evals.append(node)
        elif name == "train" and recv is not None:
            mode = get_arg(node, "mode", 0)
            if mode is not None and is_false(mode.value):
                scope.evals.append(node)
                for loop in scope.open_loops:
                    loop.evals.append(node)
            elif len(node.args) <= 1:
                scope.toggles = True
                for loop in scope.open_loops:
                    loop.toggles = True
        if isinstance(recv, cst.Name) and recv.value == "self" and self.classes:
            cls = next((c for c in reversed(self.classes) if c is not None), "")
            self._add_call(scope, (cls, name))

    def _add_call(self, scope: Scope, key: FuncKey) -> None:
        for loop in scope.open_loops:
            loop.callees.add(key)
        no_grad = scope.no_grad_node() is not None
        scope.calls.append(CallSite(key, tuple(scope.open_loops), no_grad, bool(scope.evals or scope.eval_context)))

    # -- questions (after leave_Module) ------------------------------------------------
    def finish(self) -> None:
        """Close the module scope and settle what each function does, callees included."""
        if self.finished:
            return
        self.finished = True
        self.done.extend(self.scopes)
        self.scopes = []
        direct: dict[FuncKey, list[Scope]] = {}
        for scope in self.done:
            if scope.key is not None:
                direct.setdefault(scope.key, []).append(scope)
        self.functions = direct
        self.callers: dict[FuncKey, list[tuple[Scope, CallSite]]] = {}
        for scope in self.done:
            for site in scope.calls:
                self.callers.setdefault(site.key, []).append((scope, site))
        self._training = self._closure(lambda s: s.training)
        self._toggles = self._closure(lambda s: s.toggles)
        self._evaluates = self._closure(lambda s: bool(s.evals or s.eval_context or s.mode_calls))

    def _closure(self, own) -> dict[FuncKey, bool]:  # type: ignore[no-untyped-def]
        result = {key: any(own(s) for s in scopes) for key, scopes in self.functions.items()}
        changed = True
        while changed:
            changed = False
            for key, scopes in self.functions.items():
                if not result[key] and any(result.get(c.key, False) for s in scopes for c in s.calls):
                    result[key] = changed = True
        return result

    def trains(self, loop: Loop) -> bool:
        """True if a training step runs in ``loop`` (directly or in a function it calls)."""
        return loop.training or any(self._training.get(key, False) for key in loop.callees)

    def restores_train(self, loop: Loop, skip: FuncKey) -> bool:
        """True if ``loop`` calls ``.train()`` (directly or in a function it calls other than ``skip``)."""
        return loop.toggles or any(self._toggles.get(key, False) for key in loop.callees if key != skip)

    def switches_to_eval(self, scope: Scope) -> bool:
        """True if ``scope`` may switch a model to eval mode: itself, or through a function of the file it calls."""
        return bool(scope.evals or scope.eval_context or scope.mode_calls) or any(
            self._evaluates.get(site.key, False) for site in scope.calls)

    def call_sites(self, key: FuncKey) -> Iterable[tuple[Scope, CallSite]]:
        """Every call of the function ``key`` in this file, with the calling scope."""
        return self.callers.get(key, ())

    def module_scope(self) -> Scope:
        """The module body's scope."""
        return next(s for s in self.done if s.key is None)


class EvalFlowRule(Rule):
    """A rule reading the file's ``EvalFlow``; it answers in ``check`` once the module is walked."""

    ANALYSES = (EvalFlow,)

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.flow = context.shared(EvalFlow)

    def leave_Module(self, original_node: cst.Module) -> None:
        self.check(self.flow)  # the flow left the module first, so it is settled

    def check(self, flow: EvalFlow) -> None:
        """Report from the settled flow (subclasses override)."""


def is_test_file(path: str) -> bool:
    """True for pytest files (``test_*.py``, ``*_test.py``, ``conftest.py``) and files under ``tests/``."""
    parts = Path(path).parts
    name = parts[-1] if parts else ""
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py" or "tests" in parts[:-1]


# -- transforms (TRN402, TRN404) ---------------------------------------------------------

_TRANSFORM_PACKAGES = ("torchvision.transforms", "kornia.augmentation")
_RANDOM_NAMES = frozenset({
    "RandAugment", "AutoAugment", "TrivialAugmentWide", "AugMix", "ColorJitter", "ElasticTransform",
    "ScaleJitter", "MixUp", "CutMix", "GaussianNoise",
})
_CONTAINERS = frozenset({"Compose", "Sequential", "AugmentationSequential"})


def transform_name(context: FileContext, call: cst.Call) -> Optional[str]:
    """Return ``RandomCrop`` for a torchvision/kornia transform call, else None."""
    qual = context.qualname(call.func) or ""
    if not qual.startswith(_TRANSFORM_PACKAGES) and qual not in ("torch.nn.Sequential",):
        return None
    return qual.rsplit(".", 1)[-1]


def is_random_transform(name: Optional[str]) -> bool:
    """True for transforms that draw random numbers: ``Random*``, ``ColorJitter``, ``RandAugment``..."""
    return bool(name) and (name.startswith("Random") or name in _RANDOM_NAMES)  # type: ignore[union-attr]


def transform_elements(context: FileContext, values: dict[str, cst.BaseExpression],
                       expr: cst.BaseExpression, depth: int = 0) -> list[cst.BaseExpression]:
    """Flatten a transform pipeline (``Compose([...])``, a list, a name bound to one) into its elements."""
    if depth > 8:
        return [expr]
    if isinstance(expr, cst.Name) and expr.value in values:
        return transform_elements(context, values, values[expr.value], depth + 1)
    helper = _RETURNS + expr.func.value if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) else ""
    if helper in values:  # `get_train_transforms(mean, std)`: what the helper of this file returns
        return transform_elements(context, values, values[helper], depth + 1)
    if isinstance(expr, (cst.List, cst.Tuple)):
        return [e for element in expr.elements
                for e in transform_elements(context, values, element.value, depth + 1)]
    if isinstance(expr, cst.Call) and transform_name(context, expr) in _CONTAINERS:
        return [e for arg in expr.args if not arg.keyword
                for e in transform_elements(context, values, arg.value, depth + 1)]
    return [expr]


def is_transform_pipeline(context: FileContext, values: dict[str, cst.BaseExpression],
                          expr: cst.BaseExpression) -> bool:
    """True if ``expr`` is (or names) a torchvision/kornia transform or a pipeline of them."""
    elements = transform_elements(context, values, expr)
    return any(isinstance(e, cst.Call) and transform_name(context, e) for e in elements)


def data_role(context: FileContext, call: Optional[cst.Call], names: str) -> Optional[str]:
    """Return "train", "eval" or None: what a dataset call (``train=False``, ``split="val"``) or names say."""
    if call is not None:
        flag = get_arg(call, "train")
        if flag is not None and isinstance(flag.value, cst.Name) and flag.value.value in ("True", "False"):
            return "train" if flag.value.value == "True" else "eval"
        split = get_arg(call, "split")
        if split is not None and isinstance(split.value, cst.SimpleString):
            text = str(split.value.evaluated_value)
            return "eval" if is_eval_name(text) else "train" if is_train_name(text) else None
    if re.search(r"(?<![a-z])tta(?![a-z])", lowered(names)):
        return None  # test-time augmentation: random on purpose
    return "eval" if is_eval_name(names) else "train" if is_train_name(names) else None


# The key under which ``TransformRule.values`` keeps what a helper function of the file returns.
_RETURNS = "#returns:"


class TransformRule(Rule):
    """A rule judging transform pipelines by the data they are used for (``on_pipeline``)."""

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.values: dict[str, cst.BaseExpression] = {}
        self.targets: list[cst.Assign] = []
        self.seen: set[int] = set()
        self.classes = 0
        self.returns: list[list[Optional[cst.BaseExpression]]] = []  # per enclosing def: what it returns

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes += 1

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.classes -= 1

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.returns.append([])

    def visit_Return(self, node: cst.Return) -> None:
        if self.returns:
            self.returns[-1].append(node.value)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        returned = self.returns.pop()
        # A module-level helper with one return of a pipeline written out in it (`return T.Compose([...])`):
        # calling it builds that pipeline. Several returns (a train/eval switch) are not followed.
        if self.returns or self.classes or len(returned) != 1 or returned[0] is None:
            return
        if is_transform_pipeline(self.context, {}, returned[0]):
            self.values[_RETURNS + original_node.name.value] = returned[0]
        else:
            self.values.pop(_RETURNS + original_node.name.value, None)

    def helper_call(self, expr: cst.BaseExpression) -> Optional[cst.Call]:
        """Return the call of a helper that builds the pipeline ``expr`` (or the name bound to it), else None."""
        for _ in range(8):
            if not isinstance(expr, cst.Name) or expr.value not in self.values:
                break
            expr = self.values[expr.value]
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and _RETURNS + expr.func.value in self.values:
            return expr
        return None

    def visit_Assign(self, node: cst.Assign) -> None:
        self.targets.append(node)

    def _target_names(self) -> str:
        return " ".join(source_of(self.context, t.target) for t in self.targets[-1].targets) if self.targets else ""

    def leave_Assign(self, original_node: cst.Assign) -> None:
        value = original_node.value
        if isinstance(value, cst.Dict):  # {"train": Compose(...), "val": Compose(...)}
            for element in value.elements:
                if isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString):
                    self._judge(element.value, data_role(self.context, None, str(element.key.evaluated_value)))
        elif (not isinstance(value, cst.Call) or not get_arg(value, "transform")) and is_transform_pipeline(
                self.context, self.values, value):
            self._judge(value, data_role(self.context, None, self._target_names()))
        self.targets.pop()
        for target in original_node.targets:
            if isinstance(target.target, cst.Name):
                self.values[target.target.value] = value

    def visit_Call(self, node: cst.Call) -> None:
        if transform_name(self.context, node) is not None:
            return  # a transform or pipeline itself, not a dataset
        keywords = ("transform", "transforms")
        transforms = [a.value for a in node.args if a.keyword is not None and a.keyword.value in keywords]
        transforms += [a.value for a in node.args[1:] if a.keyword is None and not a.star
                       and is_transform_pipeline(self.context, self.values, a.value)]
        if not transforms:
            return
        first = node.args[0].value if node.args and node.args[0].keyword is None else None
        names = (source_of(self.context, first) if first is not None else "") + " " + self._target_names()
        role = data_role(self.context, node, names)
        for expr in transforms:
            self._judge(expr, role)

    def _judge(self, expr: cst.BaseExpression, role: Optional[str]) -> None:
        if role is not None and is_transform_pipeline(self.context, self.values, expr):
            self.on_pipeline(expr, transform_elements(self.context, self.values, expr), role)

    def on_pipeline(self, expr: cst.BaseExpression, elements: list[cst.BaseExpression], role: str) -> None:
        """Judge a pipeline used for ``role`` ("train" or "eval") data (subclasses override)."""

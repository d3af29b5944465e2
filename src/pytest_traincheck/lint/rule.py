"""The rule base class and the torch-aware helpers every rule shares.

A rule is a libcst ``BatchableCSTVisitor``: the engine runs all enabled rules
in one traversal of each file. Rules report through ``self.report`` (a finding
now) or ``self.report_if`` (a finding that depends on facts from the whole
run, such as "class ``Net`` returns softmax", settled in the project pass).
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar, Optional, Sequence, Union

import libcst as cst
from libcst.metadata import PositionProvider

from pytest_traincheck import catalog
from pytest_traincheck.lint.project import Condition

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.lint.context import FileContext


@dataclass(frozen=True)
class Valid:
    """A snippet on which the rule must stay quiet."""

    code: str
    files: Optional[dict[str, str]] = None  # other files of the same run, for cross-file rules

    def source(self) -> str:
        """Return the dedented snippet."""
        return textwrap.dedent(self.code).lstrip("\n")


@dataclass(frozen=True)
class Invalid:
    """A snippet the rule must flag, optionally at a position and with its fixed form."""

    code: str
    line: Optional[int] = None
    column: Optional[int] = None  # 1-based
    expected_fix: Optional[str] = None
    files: Optional[dict[str, str]] = None  # other files of the same run, for cross-file rules

    def source(self) -> str:
        """Return the dedented snippet."""
        return textwrap.dedent(self.code).lstrip("\n")

    def fixed_source(self) -> Optional[str]:
        """Return the dedented expected fix, if any."""
        if self.expected_fix is None:
            return None
        return textwrap.dedent(self.expected_fix).lstrip("\n")


Example = Union[Valid, Invalid, str]

# A fix maps the reported node to its replacement (or to RemovalSentinel).
FixFunc = Callable[[cst.CSTNode], cst.CSTNode]


@dataclass
class RawFinding:
    """A finding before positions are rendered and noqa is applied."""

    rule: "Rule"
    node: cst.CSTNode
    message: str
    fix: Optional[FixFunc] = None
    condition: Optional[Condition] = None
    extra: dict[str, object] = field(default_factory=dict)


class Analysis(cst.BatchableCSTVisitor):
    """A shared view of one file that several rules read (bindings, loops, train/eval flow).

    Rules name the analyses they read in ``ANALYSES``; the engine builds each one
    once per file (``context.shared``) and walks it in the same traversal, ahead
    of every rule. So when a rule's ``visit_X`` runs, the analysis has already
    seen the node; when its ``leave_X`` runs, the analysis has already left it.
    """

    def __init__(self, context: "FileContext") -> None:
        super().__init__()
        self.context = context


class Rule(cst.BatchableCSTVisitor):
    """Base class of every lint rule: metadata, reporting and torch helpers."""

    CODE: ClassVar[str] = ""
    MESSAGE: ClassVar[str] = ""
    FIX_TITLE: ClassVar[Optional[str]] = None
    FIX_SAFE: ClassVar[bool] = True
    DEFAULT_ON: ClassVar[bool] = True
    SEVERITY: ClassVar[str] = "error"
    # Substrings at least one of which a file must contain for the rule to fire;
    # the engine skips parsing files that match no enabled rule's triggers.
    TRIGGERS: ClassVar[Sequence[str]] = ("torch",)
    # The shared analyses this rule reads (see ``Analysis``).
    ANALYSES: ClassVar[tuple[type[Analysis], ...]] = ()
    VALID: ClassVar[Sequence[Example]] = ()
    INVALID: ClassVar[Sequence[Example]] = ()

    def __init__(self, context: "FileContext") -> None:
        super().__init__()
        self.context = context

    # -- metadata -----------------------------------------------------------
    @classmethod
    def name(cls) -> str:
        """Return the catalogue slug."""
        return catalog.CATALOG[cls.CODE].slug

    @classmethod
    def fixable(cls) -> bool:
        """True if some INVALID example carries an expected fix."""
        return any(isinstance(e, Invalid) and e.expected_fix is not None for e in cls.INVALID)

    @classmethod
    def docs(cls) -> str:
        """Return the rule's documentation (its class docstring, dedented)."""
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def summary(cls) -> str:
        """Return the first line of the docs."""
        return cls.docs().splitlines()[0] if cls.docs() else catalog.CATALOG[cls.CODE].summary

    # -- reporting ----------------------------------------------------------
    def report(self, node: cst.CSTNode, message: Optional[str] = None, *, fix: Optional[FixFunc] = None) -> None:
        """Report a finding at ``node``; ``fix`` maps the node to its replacement."""
        self.context.raw.append(RawFinding(self, node, message or self.MESSAGE, fix))

    def report_if(
        self,
        condition: Condition,
        node: cst.CSTNode,
        message: Optional[str] = None,
        *,
        fix: Optional[FixFunc] = None,
    ) -> None:
        """Report at ``node`` only if the project pass finds ``condition`` true."""
        self.context.raw.append(RawFinding(self, node, message or self.MESSAGE, fix, condition))

    # -- helpers (thin wrappers over the context) ------------------------------
    def qualname(self, node: Optional[cst.CSTNode]) -> Optional[str]:
        """Resolve ``nn.Linear`` to ``torch.nn.Linear`` through this file's imports."""
        return self.context.qualname(node)

    def position(self, node: cst.CSTNode) -> tuple[int, int]:
        """Return the (line, 1-based column) of ``node``."""
        pos = self.context.wrapper.resolve(PositionProvider)[node]
        return pos.start.line, pos.start.column + 1


# -- pure helpers shared by rules ------------------------------------------------


def dotted_name(node: Optional[cst.CSTNode]) -> Optional[str]:
    """Return ``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return None


def call_name(call: cst.Call) -> Optional[str]:
    """Return the last name of the called function or method (``step`` in ``opt.step()``)."""
    func = call.func
    if isinstance(func, cst.Attribute):
        return func.attr.value
    if isinstance(func, cst.Name):
        return func.value
    return None


def receiver(call: cst.Call) -> Optional[cst.BaseExpression]:
    """Return ``opt`` in ``opt.step()``, else None."""
    return call.func.value if isinstance(call.func, cst.Attribute) else None


def get_arg(call: cst.Call, keyword: str, position: Optional[int] = None) -> Optional[cst.Arg]:
    """Return the argument passed as ``keyword=`` or at ``position``."""
    positional = 0
    for arg in call.args:
        if arg.keyword is not None:
            if arg.keyword.value == keyword:
                return arg
            continue
        if arg.star:
            return None  # *args: positions beyond are unknowable
        if position is not None and positional == position:
            return arg
        positional += 1
    return None


def is_false(node: Optional[cst.BaseExpression]) -> bool:
    """True for the literal ``False``."""
    return isinstance(node, cst.Name) and node.value == "False"


def is_true(node: Optional[cst.BaseExpression]) -> bool:
    """True for the literal ``True``."""
    return isinstance(node, cst.Name) and node.value == "True"


def target_names(target: cst.BaseExpression) -> list[str]:
    """Return the plain names bound by an assignment target (tuples unpacked)."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        names: list[str] = []
        for element in target.elements:
            names.extend(target_names(element.value))
        return names
    return []


def param_names(params: cst.Parameters, *, stars: bool = True) -> list[str]:
    """Return the names a function's parameters bind (``*args``/``**kwargs`` too unless ``stars=False``)."""
    every: list[cst.Param] = [*params.posonly_params, *params.params, *params.kwonly_params]
    if stars:
        every += [star for star in (params.star_arg, params.star_kwarg) if isinstance(star, cst.Param)]
    return [p.name.value for p in every]


def self_attr(node: Optional[cst.CSTNode]) -> Optional[str]:
    """Return ``conv`` for ``self.conv``, else None."""
    if (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
    ):
        return node.attr.value
    return None

"""Per-file state shared by every rule: the tree, imports, metadata and raw findings."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import libcst as cst
from libcst.metadata import MetadataWrapper

from pytest_traincheck.lint.rule import RawFinding, dotted_name, param_names, target_names


T = TypeVar("T")


class FileContext:
    """Everything rules know about one file during its single traversal."""

    def __init__(
        self,
        path: str,
        source: str,
        module: cst.Module,
        wrapper: MetadataWrapper,
        torch_version: Optional[str] = None,
    ) -> None:
        self.path = path
        # The torch the project targets ("2.5.1"), from config or its declared dependency; None: current.
        self.torch_version = torch_version
        self.source = source
        self.module = module
        self.wrapper = wrapper
        self.raw: list[RawFinding] = []
        # local alias -> fully qualified name, filled in source order by ImportTracker
        self.imports: dict[str, str] = {}
        # modules imported with ``from m import *``, in source order (relative ones keep their dots)
        self.star_imports: list[str] = []
        # per enclosing function: imported aliases that a parameter or local assignment shadows
        self.shadowed: list[set[str]] = []
        self._shared: dict[object, object] = {}

    def shared(self, factory: Callable[["FileContext"], T]) -> T:
        """Return the one ``factory(self)`` that every rule of this traversal shares (built on first use)."""
        if factory not in self._shared:
            self._shared[factory] = factory(self)
        return self._shared[factory]  # type: ignore[return-value]

    def fresh(self) -> "FileContext":
        """Return a new context for the same tree, with no imports, findings or shared state yet."""
        return FileContext(self.path, self.source, self.module, self.wrapper, self.torch_version)

    def qualname(self, node: Optional[cst.CSTNode]) -> Optional[str]:
        """Resolve a Name/Attribute chain through the imports seen so far."""
        dotted = dotted_name(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        base = self.imports.get(head)
        if base is None or any(head in names for names in self.shadowed):
            return None
        return f"{base}.{rest}" if rest else base

    def is_torch(self, node: Optional[cst.CSTNode], *names: str) -> bool:
        """True if ``node`` resolves to one of the fully qualified ``names``."""
        return self.qualname(node) in names


class ImportTracker(cst.BatchableCSTVisitor):
    """Record import aliases as the traversal meets them (it runs before the rules)."""

    def __init__(self, context: FileContext) -> None:
        super().__init__()
        self.context = context

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            full = dotted_name(alias.name)
            if full is None:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.context.imports[alias.asname.name.value] = full
            else:
                head = full.split(".")[0]
                self.context.imports[head] = head

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        dots = "." * len(node.relative)  # a relative import keeps its dots: the project pass resolves them
        module = dotted_name(node.module) if node.module is not None else ""
        if module is None or not (module or dots):
            return
        if isinstance(node.names, cst.ImportStar):
            if module and not self.context.shadowed:  # a module-level ``from model import *``
                self.context.star_imports.append(dots + module)
            return
        module = dots + module if module else dots[:-1]
        for alias in node.names:
            name = dotted_name(alias.name)
            if name is None:
                continue
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self.context.imports[local] = f"{module}.{name}"

    # -- names that rebind an imported alias (`def f(data)` after `from torch.utils import data`)
    def _bind(self, names: list[str]) -> None:
        for name in names:
            if name not in self.context.imports:
                continue
            if self.context.shadowed:
                self.context.shadowed[-1].add(name)
            else:
                del self.context.imports[name]  # rebound at module level: no longer the module

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.context.shadowed.append({name for name in param_names(node.params) if name in self.context.imports})

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.context.shadowed.pop()

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._bind(target_names(target.target))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._bind(target_names(node.target))

    def visit_For(self, node: cst.For) -> None:
        self._bind(target_names(node.target))

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._bind(target_names(node.target))

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._bind(target_names(node.asname.name))

"""What the distributed rules (TRN711-TRN715) share: process-group setup, DDP, rank tests, world sizes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Optional

import libcst as cst

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.lint.context import FileContext
    from pytest_traincheck.lint.project import FileFacts

__all__ = ["DDP", "INIT_CALLS", "SaveSites", "is_rank_test", "is_world_size", "node_index_of", "node_tests"]

INIT_CALLS = frozenset({"torch.distributed.init_process_group", "deepspeed.init_distributed"})
DDP = frozenset({"torch.nn.parallel.DistributedDataParallel", "torch.nn.parallel.distributed.DistributedDataParallel"})
SAVE = "torch.save"

# A condition that singles out one process: `rank == 0`, `dist.get_rank() == 0`, `is_main_process()`,
# `args.local_rank in [-1, 0]`, `accelerator.is_main_process`, `if master:`.
_RANK_WORDS = re.compile(r"rank|main_process|is_main|is_master|master_process|\bmaster\b|is_primary|"
                         r"is_global_zero|is_local_main|is_world_process_zero|"
                         # one process per device: `self.gpu_id == 0` (the DDP tutorials), `args.gpu == 0`
                         r"\b(?:\w*gpu(?:_id)?|device_id|process_index)\s*==\s*0\b", re.IGNORECASE)
# The index of a machine, not of a process: `node_rank == 0` holds on every process of node 0.
_NODE_WORDS = re.compile(r"\b[\w.]*(?:node_?(?:rank|id|idx|index)|machine_rank)\b", re.IGNORECASE)
# Per-node counts in `rank = node * gpus_per_node + gpu`: the other factor is the node index.
_PER_NODE = re.compile(r"gpu|proc|per_node|local_world|device", re.IGNORECASE)
_WORLD_NAMES = frozenset({"world_size", "num_replicas", "num_processes", "n_gpus", "ngpus", "num_gpus", "nprocs",
                          "ngpus_per_node"})


def node_tests(source: str, node_indices: Iterable[str] = ()) -> list[str]:
    """Return the node indices a condition tests: `node_rank`, or a name the file computes the rank from."""
    found = [m.group(0) for m in _NODE_WORDS.finditer(source)]
    found += [name for name in node_indices if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", source)]
    return found


def is_rank_test(source: str, node_indices: Iterable[str] = ()) -> bool:
    """True if a condition's source text tests which rank runs it (a node index alone does not)."""
    for name in node_tests(source, node_indices):
        source = source.replace(name, " ")
    return _RANK_WORDS.search(source) is not None


def node_index_of(target: str, value: cst.BaseExpression) -> Optional[str]:
    """Return `args.nr` for `rank = args.nr * args.gpus + gpu` (the textbook global rank), else None.

    A target that is its own factor (`args.rank = args.rank * n + gpu`) holds the global rank
    afterwards, so nothing is returned.
    """
    if "rank" not in target.lower() or not isinstance(value, cst.BinaryOperation) \
            or not isinstance(value.operator, cst.Add):
        return None
    product = next((side for side in (value.left, value.right) if isinstance(side, cst.BinaryOperation)
                    and isinstance(side.operator, cst.Multiply)), None)
    if product is None:
        return None
    factors = [_render(product.left), _render(product.right)]
    counts = [f for f in factors if _PER_NODE.search(f)]
    others = [f for f in factors if not _PER_NODE.search(f)]
    if len(counts) != 1 or len(others) != 1 or others[0] == target or not re.fullmatch(r"[\w.]+", others[0]):
        return None
    return others[0]


def _render(node: cst.BaseExpression) -> str:
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return "?"


def is_world_size(node: cst.BaseExpression, qualname: Optional[str]) -> bool:
    """True for `dist.get_world_size()`, `world_size`, `args.world_size`, `self.num_replicas`..."""
    if isinstance(node, cst.Call):
        func = node.func
        name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
        return qualname == "torch.distributed.get_world_size" or name == "get_world_size"
    if isinstance(node, cst.Attribute):
        return node.attr.value.lower() in _WORLD_NAMES
    if isinstance(node, cst.Name):
        return node.value.lower() in _WORLD_NAMES
    return False


class SaveSites(cst.BatchableCSTVisitor):
    """Record the module-level functions that call `torch.save` outside any rank test (``FileFacts.saves``).

    A training script that imports such a helper (`from model import save_model`) and calls it
    on every rank writes the file from every rank. The rank tests are judged only when a save
    is met, so files that never save pay for nothing but the bookkeeping.
    """

    def __init__(self, context: "FileContext", facts: "FileFacts") -> None:
        super().__init__()
        self.context = context
        self.facts = facts
        self.defs: list[Optional[str]] = []  # enclosing defs (None: a class or a nested def)
        self.ifs: list[cst.If] = []  # enclosing ifs
        self.returns: list[list[cst.If]] = []  # per def: the ifs met so far whose body returns

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.defs.append(None)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.defs.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.defs.append(node.name.value if not self.defs else None)
        self.returns.append([])

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.defs.pop()
        self.returns.pop()

    def visit_If(self, node: cst.If) -> None:
        self.ifs.append(node)
        if self.returns and returns_early(node.body):
            self.returns[-1].append(node)

    def leave_If(self, original_node: cst.If) -> None:
        self.ifs.pop()

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not (isinstance(func, cst.Attribute) and func.attr.value == "save") and \
                not (isinstance(func, cst.Name) and func.value == "save"):
            return
        if len(self.defs) != 1 or self.defs[0] is None or self.context.qualname(func) != SAVE:
            return
        code = self.context.module.code_for_node
        if any(is_rank_test(code(test.test)) for test in (*self.ifs, *self.returns[-1])):
            return
        if self.defs[0] not in self.facts.saves:
            self.facts.saves.append(self.defs[0])


def returns_early(body: cst.BaseSuite) -> bool:
    """True if a block returns at its top level (`if rank != 0: return`)."""
    statements = body.body if isinstance(body, cst.IndentedBlock) else [body]
    for statement in statements:
        small = statement.body if isinstance(statement, cst.SimpleStatementLine) else []
        if any(isinstance(s, cst.Return) for s in small):
            return True
    return False

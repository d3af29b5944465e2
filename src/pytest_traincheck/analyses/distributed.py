"""What the distributed rules (TRN711-TRN715) share: process-group setup, DDP, rank tests, world sizes."""

from __future__ import annotations

import re
from typing import Optional

import libcst as cst

__all__ = ["DDP", "INIT_CALLS", "is_rank_test", "is_world_size"]

INIT_CALLS = frozenset({"torch.distributed.init_process_group", "deepspeed.init_distributed"})
DDP = frozenset({"torch.nn.parallel.DistributedDataParallel", "torch.nn.parallel.distributed.DistributedDataParallel"})

# A condition that singles out one process: `rank == 0`, `dist.get_rank() == 0`, `is_main_process()`,
# `args.local_rank in [-1, 0]`, `accelerator.is_main_process`, `if master:`.
_RANK_WORDS = re.compile(r"rank|main_process|is_main|is_master|master_process|\bmaster\b|is_primary|"
                         r"is_global_zero|is_local_main|is_world_process_zero|"
                         # one process per device: `self.gpu_id == 0` (the DDP tutorials), `args.gpu == 0`
                         r"\b(?:\w*gpu(?:_id)?|device_id|process_index)\s*==\s*0\b", re.IGNORECASE)
_WORLD_NAMES = frozenset({"world_size", "num_replicas", "num_processes", "n_gpus", "ngpus", "num_gpus", "nprocs",
                          "ngpus_per_node"})


def is_rank_test(source: str) -> bool:
    """True if a condition's source text tests which rank runs it."""
    return _RANK_WORDS.search(source) is not None


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

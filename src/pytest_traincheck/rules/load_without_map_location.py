"""TRN713: `torch.load` without `map_location` in code that initialises a process group."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.analyses.distributed import INIT_CALLS
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, get_arg

_LOAD = "torch.load"


class LoadWithoutMapLocation(Rule):
    """Flags `torch.load(...)` with no `map_location` in a file that calls `init_process_group`.

    ## What it does
    In a file that initialises a process group, finds `torch.load` calls that do not
    pass `map_location` (by keyword or as the second argument).

    ## Why is this bad?
    `torch.load` restores each tensor onto the device it was saved from, usually
    `cuda:0`. When every rank loads the checkpoint, all N copies land on GPU 0:
    it runs out of memory or slows down, and ranks on other GPUs compute with
    tensors on the wrong device until `.to()` copies them.

    ## Example
    ```python
    dist.init_process_group("nccl")
    state = torch.load("checkpoint.pt")
    ```

    ## Use instead
    ```python
    dist.init_process_group("nccl")
    state = torch.load("checkpoint.pt", map_location=f"cuda:{local_rank}")
    ```
    """

    CODE = "TRN713"
    MESSAGE = ("`torch.load` without `map_location` in a distributed program puts every rank's copy on the GPU the "
               "checkpoint was saved from: pass `map_location` (the rank's device, or \"cpu\").")
    SEVERITY = "warning"
    TRIGGERS = ("init_process_group", "init_distributed")

    VALID = [
        Valid("""
            import torch
            import torch.distributed as dist
            dist.init_process_group("nccl")
            state = torch.load("ckpt.pt", map_location=f"cuda:{local_rank}", weights_only=True)
            """),
        Valid("""
            import torch
            torch.distributed.init_process_group("gloo")
            state = torch.load(path, "cpu")
            """),
        # No process group: single-process code.
        Valid("""
            import torch
            state = torch.load("ckpt.pt", weights_only=True)
            """),
        Valid("""
            import torch
            import torch.distributed as dist
            dist.init_process_group("nccl")
            state = torch.load(path, **load_kwargs)
            """),
    ]
    INVALID = [
        Invalid("""
            import torch
            import torch.distributed as dist
            dist.init_process_group("nccl")
            state = torch.load("ckpt.pt", weights_only=True)
            """, line=4, column=9),
        Invalid("""
            import torch
            from torch.distributed import init_process_group
            def resume(model, path):
                model.load_state_dict(torch.load(path)["model"])
            def main(rank):
                init_process_group("nccl", rank=rank, world_size=8)
                resume(model, "last.pt")
            """, line=4),
        Invalid("""
            from torch import load
            import torch.distributed as dist
            def main():
                dist.init_process_group(backend="nccl")
                checkpoint = load(args.resume, weights_only=True)
            """, line=5),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.initialises = False
        self.loads: list[cst.Call] = []

    def visit_Call(self, node: cst.Call) -> None:
        qual = self.qualname(node.func)
        if qual in INIT_CALLS:
            self.initialises = True
        elif (qual == _LOAD and get_arg(node, "map_location", 1) is None
              and not any(arg.star for arg in node.args)):
            self.loads.append(node)

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.initialises:
            for call in self.loads:
                self.report(call)

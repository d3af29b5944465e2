"""TRN712: `torch.save` on every rank of a program that initialises a process group."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.analyses.distributed import INIT_CALLS, is_rank_test
from pytest_traincheck.analyses.evalflow import source_of
from pytest_traincheck.lint.rule import Invalid, Rule, Valid

_SAVE = "torch.save"


class SaveNotRankGuarded(Rule):
    """Flags `torch.save` outside any rank test in a file that calls `init_process_group`.

    ## What it does
    In a file that initialises a process group, finds `torch.save(...)` calls that
    are not inside an `if` testing the rank (`if rank == 0:`, `if dist.get_rank() == 0:`,
    `if is_main_process():`, `if args.local_rank in (-1, 0):`) and not after an early
    `return` under such a test. A save inside a function is reported only when this
    file calls it (or passes it, as to `mp.spawn`) outside a rank test too, or it is
    the function that initialises the process group (a helper called only from
    guarded code is fine).

    ## Why is this bad?
    Every rank runs the same script. Unguarded, all N ranks write the same file at
    the same moment: the writes interleave or truncate each other, and a rank that
    loads the file right after may read a half-written checkpoint. It also multiplies
    the I/O by N.

    ## Known problems
    Rank tests are recognised by name (`rank`, `main_process`, `master`); a guard
    spelled differently (`if not args.worker:`) is not. Saving one file per rank
    (`f"ckpt_{rank}.pt"`) is legitimate; silence such a line with `# noqa: TRN712`.

    ## Example
    ```python
    dist.init_process_group("nccl")
    ...
    torch.save(model.module.state_dict(), "model.pt")
    ```

    ## Use instead
    ```python
    dist.init_process_group("nccl")
    ...
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), "model.pt")
    dist.barrier()
    ```
    """

    CODE = "TRN712"
    MESSAGE = ("`torch.save` runs on every rank of this distributed program, so all ranks write the file at once: "
               "save under `if dist.get_rank() == 0:` and `dist.barrier()` before loading.")
    SEVERITY = "warning"
    TRIGGERS = ("init_process_group", "init_distributed")

    VALID = [
        Valid("""
            import torch
            import torch.distributed as dist
            dist.init_process_group("nccl")
            train(model)
            if dist.get_rank() == 0:
                torch.save(model.module.state_dict(), "model.pt")
            dist.barrier()
            """),
        Valid("""
            import torch
            import torch.distributed as dist
            def save_on_master(*args, **kwargs):
                if is_main_process():
                    torch.save(*args, **kwargs)
            def main(args):
                dist.init_process_group("nccl")
                save_on_master(model.state_dict(), "ckpt.pt")
            """),
        # A helper called only under a rank test.
        Valid("""
            import torch
            import torch.distributed as dist
            def checkpoint(model, path):
                torch.save(model.state_dict(), path)
            def main(local_rank):
                dist.init_process_group("nccl")
                if local_rank == 0:
                    checkpoint(model, "last.pt")
            """),
        Valid("""
            import torch
            import torch.distributed as dist
            def main(rank):
                dist.init_process_group("gloo")
                train()
                if rank != 0:
                    return
                torch.save(model.state_dict(), "model.pt")
            """),
        # One process per GPU: the device index is the rank (the DDP tutorial series).
        Valid("""
            import torch
            from torch.distributed import init_process_group
            class Trainer:
                def _save_checkpoint(self, epoch):
                    torch.save(self.model.module.state_dict(), "checkpoint.pt")
                def train(self, max_epochs):
                    for epoch in range(max_epochs):
                        self._run_epoch(epoch)
                        if self.gpu_id == 0 and epoch % self.save_every == 0:
                            self._save_checkpoint(epoch)
            def main(rank, world_size):
                init_process_group(backend="nccl", rank=rank, world_size=world_size)
                Trainer().train(10)
            """),
        # No process group: a single-process script.
        Valid("""
            import torch
            torch.save(model.state_dict(), "model.pt")
            """),
    ]
    INVALID = [
        Invalid("""
            import torch
            import torch.distributed as dist
            dist.init_process_group("nccl")
            train(model)
            torch.save(model.module.state_dict(), "model.pt")
            """, line=5, column=1),
        Invalid("""
            import torch
            from torch.distributed import init_process_group
            def save(model, epoch):
                torch.save({"model": model.state_dict(), "epoch": epoch}, f"ckpt_{epoch}.pt")
            def main(rank, world):
                init_process_group("gloo", rank=rank, world_size=world)
                for epoch in range(10):
                    train_one_epoch()
                    save(model, epoch)
            """, line=4),
        Invalid("""
            import torch
            import torch.distributed as dist
            def main(rank):
                dist.init_process_group("nccl")
                for epoch in range(3):
                    if epoch % 2 == 0:
                        torch.save(model.state_dict(), "ckpt.pt")
            """, line=7),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.initialises = False
        self.guards = 0  # enclosing rank tests
        self.functions: list[list[Optional[str]]] = []  # [name, early-return seen] per enclosing def
        self.saves: list[tuple[cst.Call, Optional[str]]] = []  # unguarded saves and their function
        self.unguarded_calls: set[str] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions.append([node.name.value, None])

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.functions.pop()

    def visit_If(self, node: cst.If) -> None:
        if is_rank_test(source_of(self.context, node.test)):
            self.guards += 1
            if self.functions and _returns(node.body):
                self.functions[-1][1] = "early-return"  # `if rank != 0: return` guards the rest

    def leave_If(self, original_node: cst.If) -> None:
        if is_rank_test(source_of(self.context, original_node.test)):
            self.guards -= 1

    def visit_Call(self, node: cst.Call) -> None:
        qual = self.qualname(node.func)
        if qual in INIT_CALLS:
            self.initialises = True
            self.unguarded_calls.update(f[0] for f in self.functions if f[0])  # the ranks' entry point
            return
        guarded = self.guards > 0 or any(f[1] for f in self.functions)
        if guarded:
            return
        if qual == _SAVE:
            self.saves.append((node, self.functions[-1][0] if self.functions else None))
            return
        if isinstance(node.func, (cst.Name, cst.Attribute)):
            name = node.func.value if isinstance(node.func, cst.Name) else node.func.attr.value
            self.unguarded_calls.add(name)
        # `mp.spawn(main, ...)`, `Process(target=main)`: a function passed along runs on every rank.
        self.unguarded_calls.update(arg.value.value for arg in node.args if isinstance(arg.value, cst.Name))

    def leave_Module(self, original_node: cst.Module) -> None:
        if not self.initialises:
            return
        for call, function in self.saves:
            if function is None or function in self.unguarded_calls:
                self.report(call)


def _returns(body: cst.BaseSuite) -> bool:
    statements = body.body if isinstance(body, cst.IndentedBlock) else [body]
    for statement in statements:
        small = statement.body if isinstance(statement, cst.SimpleStatementLine) else []
        if any(isinstance(s, cst.Return) for s in small):
            return True
    return False

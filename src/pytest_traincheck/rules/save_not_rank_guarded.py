"""TRN712: `torch.save` on every rank of a program that initialises a process group."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.analyses.distributed import (
    INIT_CALLS,
    SAVE,
    is_rank_test,
    node_index_of,
    node_tests,
    returns_early,
)
from pytest_traincheck.analyses.evalflow import source_of
from pytest_traincheck.lint.project import Condition
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, dotted_name

_HELPER = ("`{}(...)` calls `torch.save` (`{}`) and runs on every rank of this distributed program, so all ranks "
           "write the file at once: call it under `if dist.get_rank() == 0:` and `dist.barrier()` before loading.")
_NODE_GUARD = ("This save is guarded by `{}`, which tests the node index, not the rank: every process of that "
               "node writes the same file at once. Guard with the global rank (`dist.get_rank() == 0`).")


class SaveNotRankGuarded(Rule):
    """Flags `torch.save` outside any rank test in a file that calls `init_process_group`.

    ## What it does
    In a file that initialises a process group, finds `torch.save(...)` calls that
    are not inside an `if` testing the rank (`if rank == 0:`, `if dist.get_rank() == 0:`,
    `if is_main_process():`, `if args.local_rank in (-1, 0):`) and not after an early
    `return` under such a test. A save inside a function is reported only when this
    file calls it (or passes it, as to `mp.spawn`) outside a rank test too, or it is
    the function that initialises the process group (a helper called only from
    guarded code is fine). A function of another module of the project that
    saves outside any rank test (SimCLR's `save_model(...)`, defined in
    `model.py`) is followed: its unguarded call is reported at the call.

    A test of the node index is not a rank test: `node_rank == 0` (also
    `node_id`, `machine_rank`) or the name the file computes the global rank
    from (`rank = args.nr * args.gpus + gpu` makes `args.nr == 0` a node test)
    holds on every process of that node. `local_rank == 0` and
    `rank % ngpus_per_node == 0` are taken as rank tests.

    ## Why is this bad?
    Every rank runs the same script. Unguarded, all N ranks write the same file at
    the same moment: the writes interleave or truncate each other, and a rank that
    loads the file right after may read a half-written checkpoint. It also multiplies
    the I/O by N.

    ## Known problems
    Rank tests are recognised by name (`rank`, `main_process`, `master`); a guard
    spelled differently (`if not args.worker:`) is not. A helper of another module
    is followed one call deep. Saving one file per rank
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
        # A helper of another module that guards itself, and one called only under a rank test.
        Valid("""
            import torch
            import torch.distributed as dist
            from utils import save_on_master, save_checkpoint
            def main(gpu, args):
                rank = args.nr * args.gpus + gpu
                dist.init_process_group("nccl", rank=rank, world_size=args.world_size)
                save_on_master(model.state_dict(), "ckpt.pt")
                if rank == 0:
                    save_checkpoint(model, "last.pt")
            """, files={"utils.py": """
            import torch
            import torch.distributed as dist
            def save_on_master(state, path):
                if dist.get_rank() != 0:
                    return
                torch.save(state, path)
            def save_checkpoint(model, path):
                torch.save(model.state_dict(), path)
            """}),
        # The node index together with the local rank: one process in all.
        Valid("""
            import torch
            import torch.distributed as dist
            def main(args):
                dist.init_process_group("nccl")
                if args.node_rank == 0 and args.local_rank == 0:
                    torch.save(model.state_dict(), "model.pt")
            """),
        # pytorch/examples imagenet: the node index turned into the global rank in place.
        Valid("""
            import torch
            import torch.distributed as dist
            def main_worker(gpu, ngpus_per_node, args):
                args.rank = args.rank * ngpus_per_node + gpu
                dist.init_process_group(backend="nccl", world_size=args.world_size, rank=args.rank)
                if args.rank % ngpus_per_node == 0:
                    torch.save(state, "checkpoint.pth.tar")
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
        # SimCLR: the guard tests the node index (rank = nr * gpus + gpu), so each process of node 0 saves.
        Invalid("""
            import torch
            import torch.distributed as dist
            def main(gpu, args):
                rank = args.nr * args.gpus + gpu
                dist.init_process_group("nccl", rank=rank, world_size=args.world_size)
                for epoch in range(args.epochs):
                    train(model)
                    if args.nr == 0 and epoch % 10 == 0:
                        torch.save(model.state_dict(), f"checkpoint_{epoch}.tar")
            """, line=9, column=13),
        # SimCLR: the final save_model(...) of model.py runs on every rank.
        Invalid("""
            import torch
            import torch.distributed as dist
            import torch.multiprocessing as mp
            from model import save_model
            def main(gpu, args):
                rank = args.nr * args.gpus + gpu
                if args.nodes > 1:
                    dist.init_process_group("nccl", rank=rank, world_size=args.world_size)
                train(model)
                save_model(args, model, optimizer)
            if __name__ == "__main__":
                mp.spawn(main, args=(args,), nprocs=args.gpus, join=True)
            """, line=10, column=5, files={"model.py": """
            import os
            import torch
            def save_model(args, model, optimizer):
                out = os.path.join(args.model_path, "checkpoint_{}.tar".format(args.current_epoch))
                if isinstance(model, torch.nn.DataParallel):
                    torch.save(model.module.state_dict(), out)
                else:
                    torch.save(model.state_dict(), out)
            """}),
        Invalid("""
            import torch
            import torch.distributed as dist
            def main(args):
                dist.init_process_group("nccl")
                train(model)
                if args.node_rank == 0:
                    torch.save(model.state_dict(), "model.pt")
            """, line=7),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.initialises = False
        self.guards = 0  # enclosing rank tests
        self.tests: list[tuple[bool, Optional[str]]] = []  # per enclosing if: (a rank test, the node index tested)
        self.node_indices: list[str] = []  # `args.nr` once the file computes `rank = args.nr * args.gpus + gpu`
        self.functions: list[list[Optional[str]]] = []  # [name, early-return seen] per enclosing def
        # unguarded saves, and calls of other modules' functions: (call, its function, callee, node test)
        self.saves: list[tuple[cst.Call, Optional[str], Optional[str], Optional[str]]] = []
        self.unguarded_calls: set[str] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions.append([node.name.value, None])

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.functions.pop()

    def visit_Assign(self, node: cst.Assign) -> None:
        if len(node.targets) == 1:
            target = dotted_name(node.targets[0].target)
            found = node_index_of(target, node.value) if target else None
            if found and found not in self.node_indices:
                self.node_indices.append(found)

    def visit_If(self, node: cst.If) -> None:
        test = source_of(self.context, node.test)
        rank = is_rank_test(test, self.node_indices)
        nodes = None if rank else next(iter(node_tests(test, self.node_indices)), None)
        self.tests.append((rank, test if nodes else None))
        if rank:
            self.guards += 1
            if self.functions and returns_early(node.body):
                self.functions[-1][1] = "early-return"  # `if rank != 0: return` guards the rest

    def leave_If(self, original_node: cst.If) -> None:
        rank, _ = self.tests.pop()
        if rank:
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
        function = self.functions[-1][0] if self.functions else None
        node_test = next((test for _, test in reversed(self.tests) if test), None)
        if qual == SAVE:
            self.saves.append((node, function, None, node_test))
            return
        if qual and "." in qual and not qual.startswith("torch."):
            self.saves.append((node, function, qual, node_test))  # `save_model(...)` from another module
        if isinstance(node.func, (cst.Name, cst.Attribute)):
            name = node.func.value if isinstance(node.func, cst.Name) else node.func.attr.value
            self.unguarded_calls.add(name)
        # `mp.spawn(main, ...)`, `Process(target=main)`: a function passed along runs on every rank.
        self.unguarded_calls.update(arg.value.value for arg in node.args if isinstance(arg.value, cst.Name))

    def leave_Module(self, original_node: cst.Module) -> None:
        if not self.initialises:
            return
        for call, function, helper, node_test in self.saves:
            if function is not None and function not in self.unguarded_calls:
                continue
            message = _NODE_GUARD.format(node_test) if node_test else None
            if helper is None:
                self.report(call, message)
            else:
                name = helper.rsplit(".", 1)[-1]
                self.report_if(Condition("saves", helper), call, message or _HELPER.format(name, helper))

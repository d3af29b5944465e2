"""TRN711: a DataLoader without a DistributedSampler in code that initialises a process group."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.analyses.distributed import INIT_CALLS
from pytest_traincheck.analyses.evalflow import is_eval_name
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, get_arg, target_names

_LOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})


class LoaderWithoutDistributedSampler(Rule):
    """Flags a training DataLoader with no sampler in a file that calls `init_process_group`.

    ## What it does
    In a file that initialises a process group (`dist.init_process_group(...)`),
    finds `DataLoader(...)` calls that pass neither `sampler=` nor `batch_sampler=`.
    Loaders assigned to evaluation names (`val_loader`, `test_dl`) are left alone:
    evaluating the whole set on every rank is a legitimate choice.

    ## Why is this bad?
    Without a `DistributedSampler`, every rank iterates the whole dataset (shuffled
    differently or not at all), so N GPUs do the work of one N times over: an epoch
    takes as long as on one GPU and the model sees each sample N times per epoch.

    ## Known problems
    A sampler built in another file and passed in is trusted; a DataLoader built in
    a helper file with no `init_process_group` of its own is not checked.

    ## Example
    ```python
    dist.init_process_group("nccl")
    loader = DataLoader(train_set, batch_size=32, shuffle=True)
    ```

    ## Use instead
    ```python
    dist.init_process_group("nccl")
    sampler = DistributedSampler(train_set)
    loader = DataLoader(train_set, batch_size=32, sampler=sampler)
    ```
    """

    CODE = "TRN711"
    MESSAGE = ("This DataLoader has no `DistributedSampler` although the file initialises a process group, so every "
               "rank trains on the whole dataset: pass `sampler=DistributedSampler(dataset)` (and drop "
               "`shuffle=True`).")
    SEVERITY = "warning"
    TRIGGERS = ("init_process_group", "init_distributed")

    VALID = [
        Valid("""
            import torch.distributed as dist
            from torch.utils.data import DataLoader, DistributedSampler
            dist.init_process_group("nccl")
            loader = DataLoader(train_set, batch_size=32, sampler=DistributedSampler(train_set))
            """),
        # The evaluation loader may cover the whole set on every rank.
        Valid("""
            import torch.distributed as dist
            from torch.utils.data import DataLoader, DistributedSampler
            dist.init_process_group("gloo")
            train_loader = DataLoader(train_set, sampler=DistributedSampler(train_set), batch_size=8)
            val_loader = DataLoader(val_set, batch_size=64)
            """),
        # No process group in this file: a single-process script.
        Valid("""
            from torch.utils.data import DataLoader
            loader = DataLoader(train_set, batch_size=32, shuffle=True)
            """),
        Valid("""
            import torch
            torch.distributed.init_process_group("nccl")
            sampler = make_sampler(ds) if distributed else None
            loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, shuffle=sampler is None)
            """),
    ]
    INVALID = [
        Invalid("""
            import torch.distributed as dist
            from torch.utils.data import DataLoader
            dist.init_process_group("nccl")
            loader = DataLoader(train_set, batch_size=32, shuffle=True)
            """, line=4, column=10),
        Invalid("""
            import torch
            def main(rank, world_size):
                torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
                train_dl = torch.utils.data.DataLoader(dataset, batch_size=16)
                for x, y in train_dl:
                    step(x, y)
            """, line=4),
        Invalid("""
            from torch.distributed import init_process_group
            from torch.utils.data import DataLoader
            def setup(rank):
                init_process_group(backend="nccl", rank=rank, world_size=4)
            def loaders(ds):
                return DataLoader(ds, batch_size=64, shuffle=True, num_workers=4)
            """, line=6),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.initialises = False
        self.loaders: list[cst.Call] = []
        self.eval_calls: set[int] = set()

    def visit_Assign(self, node: cst.Assign) -> None:
        names = [n for t in node.targets for n in target_names(t.target)]
        if isinstance(node.value, cst.Call) and any(is_eval_name(n) for n in names):
            self.eval_calls.add(id(node.value))

    def visit_Call(self, node: cst.Call) -> None:
        qual = self.qualname(node.func)
        if qual in INIT_CALLS:
            self.initialises = True
        elif qual in _LOADERS and not self._has_sampler(node) and id(node) not in self.eval_calls:
            self.loaders.append(node)

    @staticmethod
    def _has_sampler(call: cst.Call) -> bool:
        if any(arg.star for arg in call.args):
            return True  # **kwargs may carry it
        return (get_arg(call, "sampler", 3) is not None or get_arg(call, "batch_sampler", 4) is not None
                or _dataset_is_eval(call))

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.initialises:
            for call in self.loaders:
                self.report(call)


def _dataset_is_eval(call: cst.Call) -> bool:
    dataset = get_arg(call, "dataset", 0)
    value: Optional[cst.BaseExpression] = dataset.value if dataset is not None else None
    return isinstance(value, cst.Name) and is_eval_name(value.value)

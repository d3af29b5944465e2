"""TRN405: a DistributedSampler whose epoch is never set."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.analyses.evalflow import source_of
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, get_arg, is_false

_SAMPLERS = frozenset({"torch.utils.data.DistributedSampler", "torch.utils.data.distributed.DistributedSampler"})


class DistributedSamplerWithoutSetEpoch(Rule):
    """Flags a `DistributedSampler` in a file with an epoch loop that never calls `set_epoch`.

    ## What it does
    Finds `DistributedSampler(...)` constructions (shuffling, the default) in
    a file that has an epoch loop (a `for`/`while` loop whose target or
    iterable mentions `epoch`) and never calls `.set_epoch(...)` on anything
    (`sampler.set_epoch(epoch)`, `loader.sampler.set_epoch(epoch)`). The
    finding is at the sampler's construction.

    ## Why is this bad?
    `DistributedSampler` shuffles with a generator seeded by `seed + epoch`;
    the epoch stays 0 until `set_epoch` is called. Without it every epoch uses
    the same permutation on every rank: the data is "shuffled" once and then
    replayed in the same order, losing the benefit of shuffling.

    ## Known problems
    Samplers built in one file and iterated in another are not checked, and a
    training framework that sets the epoch itself (Lightning, Accelerate) is
    trusted only when there is no epoch loop in the file.

    ## Example
    ```python
    sampler = DistributedSampler(train_set)
    loader = DataLoader(train_set, sampler=sampler, batch_size=32)
    for epoch in range(epochs):
        for x, y in loader:
            ...
    ```

    ## Use instead
    ```python
    sampler = DistributedSampler(train_set)
    loader = DataLoader(train_set, sampler=sampler, batch_size=32)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            ...
    ```
    """

    CODE = "TRN405"
    MESSAGE = ("`DistributedSampler` shuffles with `seed + epoch`, but `set_epoch` is never called, so every epoch "
               "replays the same order: call `sampler.set_epoch(epoch)` at the start of each epoch.")
    SEVERITY = "warning"
    TRIGGERS = ("DistributedSampler",)

    VALID = [
        Valid("""
            from torch.utils.data import DataLoader, DistributedSampler
            sampler = DistributedSampler(train_set)
            loader = DataLoader(train_set, sampler=sampler, batch_size=32)
            for epoch in range(epochs):
                sampler.set_epoch(epoch)
                for x, y in loader:
                    step(x, y)
            """),
        Valid("""
            from torch.utils.data.distributed import DistributedSampler
            loader = DataLoader(train_set, sampler=DistributedSampler(train_set))
            for epoch in range(args.epochs):
                loader.sampler.set_epoch(epoch)
                train_one_epoch(loader)
            """),
        # Not shuffling: the epoch does not matter.
        Valid("""
            from torch.utils.data import DistributedSampler
            val_sampler = DistributedSampler(val_set, shuffle=False)
            for epoch in range(epochs):
                evaluate(val_sampler)
            """),
        # No epoch loop in this file: a loader factory.
        Valid("""
            from torch.utils.data import DataLoader, DistributedSampler
            def make_loader(ds):
                return DataLoader(ds, sampler=DistributedSampler(ds), batch_size=32)
            """),
    ]
    INVALID = [
        Invalid("""
            from torch.utils.data import DataLoader, DistributedSampler
            sampler = DistributedSampler(train_set)
            loader = DataLoader(train_set, sampler=sampler, batch_size=32)
            for epoch in range(epochs):
                for x, y in loader:
                    step(x, y)
            """, line=2, column=11),
        Invalid("""
            import torch
            sampler = torch.utils.data.distributed.DistributedSampler(ds, shuffle=True)
            loader = torch.utils.data.DataLoader(ds, sampler=sampler)
            epoch = 0
            while epoch < max_epochs:
                train(loader)
                epoch += 1
            """, line=2),
        Invalid("""
            import torch.utils.data as tud
            def main():
                sampler = tud.DistributedSampler(ds, num_replicas=world, rank=rank)
                for ep in range(n_epochs):
                    for batch in tud.DataLoader(ds, sampler=sampler):
                        step(batch)
            """, line=3),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.samplers: list[cst.Call] = []
        self.epoch_loop = False
        self.set_epoch = False

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Attribute) and node.func.attr.value == "set_epoch":
            self.set_epoch = True
        elif self.qualname(node.func) in _SAMPLERS:
            shuffle = get_arg(node, "shuffle", 3)
            if shuffle is None or not is_false(shuffle.value):
                self.samplers.append(node)

    def visit_For(self, node: cst.For) -> None:
        text = source_of(self.context, node.target) + source_of(self.context, node.iter)
        self.epoch_loop = self.epoch_loop or "epoch" in text.lower()

    def visit_While(self, node: cst.While) -> None:
        self.epoch_loop = self.epoch_loop or "epoch" in source_of(self.context, node.test).lower()

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.epoch_loop and not self.set_epoch and "set_epoch" not in self.context.source:
            for sampler in self.samplers:
                self.report(sampler)

"""TRN715: the loss is divided by the world size before `backward()` under DDP."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.analyses.distributed import DDP, is_world_size
from pytest_traincheck.lint.rule import Invalid, Rule, Valid


class LossDividedByWorldSize(Rule):
    """Flags `loss / world_size` that reaches `.backward()` in a file that wraps a model in DDP.

    ## What it does
    In a file that builds `DistributedDataParallel`, finds a division by the world
    size (`dist.get_world_size()`, `world_size`, `args.world_size`, `num_replicas`)
    whose result is back-propagated: `(loss / world_size).backward()`, or
    `loss = loss / world_size` (or `loss /= world_size`) followed by
    `loss.backward()` in the same function.

    ## Why is this bad?
    DDP's all-reduce already averages the gradients over the ranks. Dividing the
    loss by the world size as well shrinks every gradient N times: the effective
    learning rate drops by the number of GPUs, and results change when the job is
    scaled. (Without DDP, summing gradients by hand, the division is right; that
    code is not reported.)

    ## Known problems
    Only divisions in the same function as the `backward()` are followed.
    Dividing a detached copy for logging is not reported.

    ## Example
    ```python
    model = DDP(net, device_ids=[rank])
    loss = criterion(model(x), y) / dist.get_world_size()
    loss.backward()
    ```

    ## Use instead
    ```python
    model = DDP(net, device_ids=[rank])
    loss = criterion(model(x), y)
    loss.backward()
    ```
    """

    CODE = "TRN715"
    MESSAGE = ("The loss is divided by the world size before `backward()`, but DDP already averages the gradients "
               "over the ranks, so they shrink by the world size: drop the division.")
    SEVERITY = "error"
    TRIGGERS = ("DistributedDataParallel", "DDP")

    VALID = [
        Valid("""
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel as DDP
            model = DDP(net)
            loss = criterion(model(x), y)
            loss.backward()
            reduced = loss.detach().clone()
            dist.all_reduce(reduced)
            print(reduced / dist.get_world_size())
            """),
        # Gradient accumulation divides by the number of micro-batches, not the world size.
        Valid("""
            from torch.nn.parallel import DistributedDataParallel
            model = DistributedDataParallel(net)
            loss = criterion(model(x), y) / accumulation_steps
            loss.backward()
            """),
        # Hand-written gradient averaging without DDP: dividing is correct there.
        Valid("""
            import torch.distributed as dist
            loss = criterion(net(x), y) / dist.get_world_size()
            loss.backward()
            for p in net.parameters():
                dist.all_reduce(p.grad)
            """),
        Valid("""
            from torch.nn.parallel import DistributedDataParallel as DDP
            model = DDP(net)
            loss = criterion(model(x), y)
            loss = loss / world_size
            loss = criterion(model(x), y)
            loss.backward()
            """),
    ]
    INVALID = [
        Invalid("""
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel as DDP
            model = DDP(net, device_ids=[rank])
            loss = criterion(model(x), y) / dist.get_world_size()
            loss.backward()
            """, line=4, column=8),
        Invalid("""
            import torch
            def train(rank, world_size):
                model = torch.nn.parallel.DistributedDataParallel(Net())
                for x, y in loader:
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    loss /= world_size
                    loss.backward()
            """, line=6),
        Invalid("""
            from torch.nn.parallel import DistributedDataParallel
            def step(model, x, y, args):
                (loss_fn(model(x), y) / args.world_size).backward()
            model = DistributedDataParallel(net)
            """, line=3),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.ddp = False
        self.scopes: list[dict[str, cst.CSTNode]] = [{}]  # name -> division node, per function
        self.found: list[cst.CSTNode] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append({})

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scopes.pop()

    def _division(self, expr: Optional[cst.BaseExpression]) -> Optional[cst.CSTNode]:
        if (isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Divide)
                and is_world_size(expr.right, self.qualname(expr.right.func) if isinstance(expr.right, cst.Call)
                                  else None)):
            return expr
        return None

    def visit_Assign(self, node: cst.Assign) -> None:
        division = self._division(node.value)
        for target in node.targets:
            if isinstance(target.target, cst.Name):
                if division is not None:
                    self.scopes[-1][target.target.value] = division
                else:
                    self.scopes[-1].pop(target.target.value, None)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if (isinstance(node.target, cst.Name) and isinstance(node.operator, cst.DivideAssign)
                and is_world_size(node.value, self.qualname(node.value.func) if isinstance(node.value, cst.Call)
                                  else None)):
            self.scopes[-1][node.target.value] = node

    def visit_Call(self, node: cst.Call) -> None:
        if self.qualname(node.func) in DDP:
            self.ddp = True
            return
        func = node.func
        if not (isinstance(func, cst.Attribute) and func.attr.value == "backward"):
            return
        target = func.value
        division = self._division(target)
        if division is None and isinstance(target, cst.Name):
            division = self.scopes[-1].get(target.value)
        if division is not None:
            self.found.append(division)

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.ddp:
            for node in self.found:
                self.report(node)

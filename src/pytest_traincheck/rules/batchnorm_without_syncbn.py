"""TRN714: a BatchNorm model wrapped in DDP without SyncBatchNorm conversion (off by default)."""

from __future__ import annotations

import re

import libcst as cst

from pytest_traincheck.analyses.distributed import DDP
from pytest_traincheck.lint.rule import Invalid, Rule, Valid

_BATCHNORM = frozenset({"torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d",
                        "torch.nn.LazyBatchNorm1d", "torch.nn.LazyBatchNorm2d", "torch.nn.LazyBatchNorm3d"})
# torchvision constructors whose models normalise with BatchNorm.
_BN_MODELS = re.compile(r"^torchvision\.models\.(resnet\d+|resnext\w+|wide_resnet\w+|densenet\d+|mobilenet_v\w+|"
                        r"efficientnet_\w+|regnet_\w+|vgg\d+_bn|inception_v3|googlenet|shufflenet_\w+|mnasnet\w+)$")


class BatchnormWithoutSyncbn(Rule):
    """Flags `DistributedDataParallel(...)` in a file with BatchNorm layers and no SyncBatchNorm conversion.

    ## What it does
    In a file that wraps a model in `DistributedDataParallel` and builds BatchNorm
    layers (`nn.BatchNorm2d(...)`) or a torchvision model made of them (`resnet50()`),
    reports the DDP wrapper when the file never calls
    `nn.SyncBatchNorm.convert_sync_batchnorm` nor builds `nn.SyncBatchNorm`.
    Off by default: enable it with `--select TRN714`.

    ## Why is this bad?
    Under DDP each rank's BatchNorm normalises with the mean and variance of its own
    per-GPU batch. With small per-GPU batches (detection, segmentation, large
    inputs) those statistics are noisy, training degrades, and the result depends on
    the number of GPUs. SyncBatchNorm computes them over the global batch.

    ## Known problems
    With large per-GPU batches local statistics are fine and cheaper, which is why
    the rule is off by default. The BatchNorm layers and the DDP wrapper must be in
    the same file.

    ## Example
    ```python
    model = torchvision.models.resnet50().cuda(local_rank)
    model = DDP(model, device_ids=[local_rank])
    ```

    ## Use instead
    ```python
    model = torchvision.models.resnet50()
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model).cuda(local_rank)
    model = DDP(model, device_ids=[local_rank])
    ```
    """

    CODE = "TRN714"
    MESSAGE = ("This model has BatchNorm layers and is wrapped in DDP without SyncBatchNorm, so each rank normalises "
               "with its own small-batch statistics: convert it first with "
               "`nn.SyncBatchNorm.convert_sync_batchnorm(model)`.")
    SEVERITY = "info"
    DEFAULT_ON = False
    TRIGGERS = ("DistributedDataParallel", "DDP")

    VALID = [
        Valid("""
            import torch.nn as nn
            from torch.nn.parallel import DistributedDataParallel as DDP
            net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            model = DDP(net, device_ids=[rank])
            """),
        # No BatchNorm: nothing to synchronise.
        Valid("""
            import torch.nn as nn
            from torch.nn.parallel import DistributedDataParallel
            model = DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8)))
            """),
        # BatchNorm without DDP.
        Valid("""
            import torchvision
            model = torchvision.models.resnet18()
            """),
        Valid("""
            import torch.nn as nn
            from torch.nn.parallel import DistributedDataParallel
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.bn = nn.SyncBatchNorm(16)
            model = DistributedDataParallel(Net())
            """),
    ]
    INVALID = [
        Invalid("""
            import torchvision
            from torch.nn.parallel import DistributedDataParallel as DDP
            model = torchvision.models.resnet50().cuda(local_rank)
            model = DDP(model, device_ids=[local_rank])
            """, line=4, column=9),
        Invalid("""
            import torch
            import torch.nn as nn
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(3, 16, 3, bias=False)
                    self.bn = nn.BatchNorm2d(16)
            model = torch.nn.parallel.DistributedDataParallel(Net())
            """, line=8),
        Invalid("""
            from torch import nn
            from torch.nn.parallel import DistributedDataParallel
            def build(rank):
                body = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
                return DistributedDataParallel(body.to(rank), device_ids=[rank])
            """, line=5),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.batchnorm = False
        self.synced = False
        self.wrappers: list[cst.Call] = []

    def visit_Call(self, node: cst.Call) -> None:
        qual = self.qualname(node.func) or ""
        if qual in DDP:
            self.wrappers.append(node)
        elif qual in _BATCHNORM or _BN_MODELS.match(qual):
            self.batchnorm = True
        elif qual == "torch.nn.SyncBatchNorm" or qual.endswith("convert_sync_batchnorm"):
            self.synced = True

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.batchnorm and not self.synced and "SyncBatchNorm" not in self.context.source:
            for call in self.wrappers:
                self.report(call)

"""TRN402: a training transform that converts to tensors but never normalizes (info, off by default)."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.analyses.evalflow import TransformRule, transform_name
from pytest_traincheck.lint.rule import Invalid, Valid

_TO_TENSOR = frozenset({"ToTensor"})


class InputsNotNormalized(TransformRule):
    """Flags a training transform with `ToTensor()` and no `Normalize` (off by default).

    ## What it does
    Finds transform pipelines used for training data (see TRN404 for how the
    use is found: `train=True`, `split="train"`, names like `train_transform`,
    a `"train"` key) that contain torchvision's `ToTensor()` and no
    `Normalize`. A bare `transform=ToTensor()` counts as a pipeline. Only
    pipelines made entirely of known torchvision/kornia transforms are judged:
    a `Lambda`, a user-defined transform or a variable that cannot be resolved
    might normalize, so it silences the rule.

    ## Why is this bad?
    `ToTensor()` scales pixels to [0, 1]; their mean is then around 0.4 and
    never zero. Inputs far from zero mean and unit variance slow down and
    destabilize training (the first layer's gradients share a sign,
    initialization schemes assume standardized inputs). The seed's "normalize
    data" tip.

    ## Known problems
    Off by default (enable it with `--select TRN402` or `extend-select`):
    many models train fine on [0, 1] inputs (MNIST-sized examples, models that
    start with BatchNorm), and normalization is often done elsewhere (in the
    model's `forward`, on the GPU after loading), which the rule cannot see.
    It reports "not visible here", not "wrong"; hence severity info.

    ## Example
    ```python
    train_data = datasets.MNIST("data", train=True, transform=transforms.ToTensor())
    ```

    ## Use instead
    ```python
    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,)),
    ])
    train_data = datasets.MNIST("data", train=True, transform=transform)
    ```
    """

    CODE = "TRN402"
    MESSAGE = ("The training inputs are converted with `ToTensor()` but not normalized: add "
               "`transforms.Normalize(mean, std)` after `ToTensor()` (unless the model normalizes them itself).")
    SEVERITY = "info"
    DEFAULT_ON = False
    TRIGGERS = ("ToTensor",)

    VALID = [
        Valid("""
            from torchvision import datasets, transforms
            transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
            train_data = datasets.MNIST("data", train=True, transform=transform)
            """),
        # A variable holding the Normalize (torchvision's ImageNet example).
        Valid("""
            from torchvision import transforms
            train_transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor(), normalize])
            """),
        # Custom normalization.
        Valid("""
            from torchvision import transforms
            train_tf = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: (x - 0.5) / 0.5)])
            """),
        # Test data is TRN404's business, not this rule's.
        Valid("""
            from torchvision import datasets, transforms
            test_data = datasets.MNIST("data", train=False, transform=transforms.ToTensor())
            """),
    ]
    INVALID = [
        # The seed.
        Invalid("""
            from torchvision import datasets
            from torchvision.transforms import ToTensor
            train_data = datasets.MNIST(
                root='./data',
                train=True,
                transform=ToTensor(),
                download=True,
            )
            """, line=6, column=15),
        Invalid("""
            from torchvision import transforms
            train_transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.ToTensor()])
            """, line=2, column=19),
        Invalid("""
            import torchvision.transforms as T
            from torchvision.datasets import CIFAR10
            tf = T.Compose([T.RandomHorizontalFlip(), T.ToTensor()])
            ds = CIFAR10("data", train=True, transform=tf)
            """, line=3, column=6),
    ]

    def on_pipeline(self, expr: cst.BaseExpression, elements: list[cst.BaseExpression], role: str) -> None:
        if role != "train":
            return
        names = [transform_name(self.context, e) if isinstance(e, cst.Call) else None for e in elements]
        unknown = None in names or "Lambda" in names
        if unknown or not _TO_TENSOR & set(names) or any("ormaliz" in (n or "") for n in names):
            return  # something unknown might normalize
        anchor = self.values.get(expr.value, expr) if isinstance(expr, cst.Name) else expr
        if id(anchor) not in self.seen:
            self.seen.add(id(anchor))
            self.report(anchor)

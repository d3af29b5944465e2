"""TRN404: random augmentation in the transforms of evaluation data."""

from __future__ import annotations

import libcst as cst

from pytest_traincheck.analyses.evalflow import TransformRule, is_random_transform, transform_name
from pytest_traincheck.lint.rule import Invalid, Valid


_FROM_HELPER = ("`{}()` returns random augmentation (`{}`) and it is used for evaluation data, so the metric is "
                "noisy and biased: build the evaluation pipeline from deterministic transforms.")


class AugmentationOnEvalData(TransformRule):
    """Flags random augmentation (`RandomCrop`, `ColorJitter`, `RandAugment`...) in evaluation transforms.

    ## What it does
    Finds torchvision (`transforms` and `transforms.v2`) and kornia transforms
    that draw random numbers (`Random*`, `ColorJitter`, `RandAugment`,
    `AutoAugment`, `TrivialAugmentWide`, `AugMix`, `ElasticTransform`, `MixUp`,
    `CutMix`...) in a pipeline used for evaluation data:

    * assigned to a name for evaluation (`val_transform = Compose([...])`,
      `test_tf`), or under a `"val"` / `"test"` key of a dict of pipelines;
      also when the pipeline is what a helper function of the file returns
      (`val_transforms = get_train_transforms(mean, std)`, reported at the call;
      helpers with one `return` of a pipeline written out in it);
    * passed as `transform=` (or positionally, as `ImageFolder(valdir, ...)`
      takes it) to a dataset built with `train=False`, `split="test"` /
      `"validation"`, from a path named like `valdir`, or assigned to a name
      like `test_data`; through a variable too (`transform = Compose([...])`
      then `MNIST(..., train=False, transform=transform)`).

    The finding is at the random transform. Names containing `tta` (test-time
    augmentation, random on purpose) are left alone.

    ## Why is this bad?
    Evaluation must measure the same thing every time. With random crops,
    flips or color jitter in the validation pipeline, the metric changes from
    run to run, is biased (the model is scored on distorted images it would
    not see in deployment) and model selection on it becomes noise. The
    seed's "correct data augmentation" tip: augment the training data only.

    ## Known problems
    Albumentations pipelines and transforms of other libraries are not
    recognized, nor random transforms with zero strength (`RandomHorizontalFlip(p=0)`).

    ## Example
    ```python
    test_transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.ToTensor(),
    ])
    test_data = datasets.CIFAR10("data", train=False, transform=test_transform)
    ```

    ## Use instead
    ```python
    test_transform = transforms.Compose([
        transforms.ToTensor(),
    ])
    test_data = datasets.CIFAR10("data", train=False, transform=test_transform)
    ```
    """

    CODE = "TRN404"
    MESSAGE = ("Random augmentation is applied to evaluation data, so the metric is noisy and biased: "
               "use deterministic transforms (resize, center crop, normalize) for validation and test data.")
    SEVERITY = "warning"
    TRIGGERS = ("Random", "Jitter", "Augment", "AugMix", "ElasticTransform", "MixUp", "CutMix", "GaussianNoise")

    VALID = [
        # torchvision's ImageNet reference: random only for training.
        Valid("""
            import torchvision.transforms as transforms
            import torchvision.datasets as datasets
            normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
            train_dataset = datasets.ImageFolder(
                traindir,
                transforms.Compose([
                    transforms.RandomResizedCrop(224),
                    transforms.RandomHorizontalFlip(),
                    transforms.ToTensor(),
                    normalize,
                ]))
            val_dataset = datasets.ImageFolder(
                valdir,
                transforms.Compose([
                    transforms.Resize(256),
                    transforms.CenterCrop(224),
                    transforms.ToTensor(),
                    normalize,
                ]))
            """),
        Valid("""
            from torchvision import datasets, transforms
            train_transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.ToTensor()])
            test_transform = transforms.Compose([transforms.ToTensor()])
            train = datasets.CIFAR10("data", train=True, transform=train_transform)
            test = datasets.CIFAR10("data", train=False, transform=test_transform)
            """),
        # Test-time augmentation on purpose.
        Valid("""
            from torchvision.transforms import v2
            tta_val_transform = v2.Compose([v2.RandomHorizontalFlip(), v2.ToTensor()])
            """),
        # Helpers returning the training and the evaluation pipelines, each used for its own data.
        Valid("""
            import torchvision.transforms as T
            def get_train_transforms(mean, std):
                return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
            def get_val_transforms(mean, std):
                return T.Compose([T.ToTensor(), T.Normalize(mean=mean, std=std)])
            train_transforms = get_train_transforms(mean, std)
            val_transforms = get_val_transforms(mean, std)
            valset = CIFAR10(root, train=False, transform=val_transforms)
            """),
        # A helper that switches on a flag: which branch runs is not known.
        Valid("""
            from torchvision import transforms
            def build_transform(is_train):
                if is_train:
                    return transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()])
                return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
            val_transform = build_transform(False)
            """),
        # A random function that is not a transform.
        Valid("""
            import random
            val_indices = random.sample(range(100), 10)
            """),
    ]
    INVALID = [
        Invalid("""
            from torchvision import transforms
            val_transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()])
            """, line=2, column=37),
        # Through a neutral name shared with the test set.
        Invalid("""
            from torchvision import datasets, transforms
            transform = transforms.Compose([
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
            ])
            trainset = datasets.CIFAR10("data", train=True, transform=transform)
            testset = datasets.CIFAR10("data", train=False, transform=transform)
            """, line=3, column=5),
        # The transfer-learning tutorial's dict of pipelines, with a random crop under "val".
        Invalid("""
            from torchvision import transforms
            data_transforms = {
                "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()]),
                "val": transforms.Compose([transforms.Resize(256), transforms.RandomCrop(224), transforms.ToTensor()]),
            }
            """, line=4, column=56),
        Invalid("""
            from torchvision.transforms import v2
            from torchvision.datasets import ImageFolder
            test_data = ImageFolder("data/test", transform=v2.Compose([v2.ColorJitter(0.4), v2.ToImage()]))
            """, line=3, column=60),
    ]

    INVALID = [*INVALID,
        # image-classification-codebase's CIFAR loader: the validation set built with the training helper.
        Invalid("""
            import torchvision.transforms as T
            def get_train_transforms(mean, std):
                return T.Compose([
                    T.RandomCrop(32, padding=4),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    T.Normalize(mean=mean, std=std)
                ])
            def _cifar(root, mean, std, dataset_builder):
                train_transforms = get_train_transforms(mean, std)
                val_transforms = get_train_transforms(mean, std)
                trainset = dataset_builder(root, train=True, transform=train_transforms)
                valset = dataset_builder(root, train=False, transform=val_transforms)
            """, line=11, column=22),
        # The helper passed straight to the test dataset.
        Invalid("""
            from torchvision import datasets, transforms
            def augment():
                return transforms.Compose([transforms.ColorJitter(0.4), transforms.ToTensor()])
            test_set = datasets.CIFAR10("data", train=False, transform=augment())
            """, line=4, column=60),
    ]

    def on_pipeline(self, expr: cst.BaseExpression, elements: list[cst.BaseExpression], role: str) -> None:
        if role != "eval":
            return
        helper = self.helper_call(expr)
        for element in elements:
            if isinstance(element, cst.Call) and is_random_transform(transform_name(self.context, element)):
                anchor = helper or element  # a helper's pipeline: at the call, where it meets the eval data
                if id(anchor) not in self.seen:
                    self.seen.add(id(anchor))
                    self.report(anchor, None if helper is None else _FROM_HELPER.format(
                        helper.func.value, transform_name(self.context, element)))  # type: ignore[union-attr]
                return

"""TRN401: a training DataLoader that does not shuffle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import libcst as cst

from pytest_traincheck.analyses.evalflow import is_eval_name, is_train_name, source_of
from pytest_traincheck.lint.project import Condition
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, dotted_name, get_arg, is_false, is_true, receiver

_LOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})
_ON_CPU = ("The training `DataLoader` shuffles only when CUDA is available, so on CPU every epoch sees the "
           "batches in the same order: pass `shuffle=True` unconditionally.")
_KEY = "shuffle"
_SUBCLASS = ("The training `{}` (a `DataLoader` subclass that leaves the order to its arguments) does not shuffle, "
             "so every epoch sees the batches in the same order: pass `shuffle=True` (or a random sampler).")
_ONLY_WHEN = ("The training `DataLoader` shuffles only when `{}`, so otherwise every epoch sees the batches in "
              "the same order: pass `shuffle=True` unconditionally.")


@dataclass(frozen=True)
class _Branch:
    """One branch of an enclosing `if`: the statement, which branch, and its test as written."""

    node: cst.If
    orelse: bool
    test: str

    def other(self) -> _Branch:
        """Return the else branch of the same `if`."""
        return _Branch(self.node, True, "not " + self.test if not self.orelse else self.test)


class TrainLoaderNotShuffled(Rule):
    """Flags a training `DataLoader` built without `shuffle=True` or a sampler.

    ## What it does
    Finds `DataLoader(...)` calls for training data (the dataset or the name
    the loader is assigned to contains `train`, or the dataset is built with
    `train=True` / `split="train"`) that pass no `shuffle=True`, no `sampler=`
    and no `batch_sampler=`. It follows `**kwargs` dicts built in the same file
    (pytorch/examples' mnist sets `'shuffle': True` only in its CUDA options)
    and `shuffle=use_cuda`-style flags assigned from `torch.cuda.is_available()`,
    which are False on CPU. A `shuffle=True` merged into the keyword arguments
    only under a condition (`if use_cuda:`, `if use_accel:`, any flag) leaves the
    other branch unshuffled and is flagged too, unless both branches set it.
    The finding is at the `DataLoader` call. A class of the project that derives
    from `DataLoader` (in any file of the run: deepspeech.pytorch's
    `AudioDataLoader(train_dataset, ...)`) is judged like `DataLoader` itself,
    unless it decides the order on its own (passes `shuffle=`/`sampler=`/
    `batch_sampler=`, sets `self.sampler` or defines `__iter__`).

    It stays quiet for evaluation names (`test`, `val`, `eval`: `train_eval_loader`
    too), for datasets that are iterable (a class of the file deriving from
    `IterableDataset`, `load_dataset(..., streaming=True)`, WebDataset) since
    those cannot be shuffled by the loader, and when `shuffle=` is a value it
    cannot know (`shuffle=args.shuffle`). A loader that is only read once, as a
    single `next(iter(loader))` outside any loop, has no epochs whose order could
    repeat and is left alone.

    ## Why is this bad?
    Without shuffling, every epoch presents the samples in the same order, often
    sorted by class or by source. Each batch then holds correlated samples,
    gradient steps are biased toward whatever came last, BatchNorm statistics
    are skewed, and the model can learn the order instead of the data. The seed
    lists "shuffle at dataloader" among its training tips.

    ## Known problems
    Training data that must stay in order (truncated backpropagation through
    time over one long sequence) is flagged; silence it with `# noqa: TRN401`.
    Loaders built in one file from datasets of another are judged by names only.
    A `DataLoader` subclass that passes the shuffle flag to `DataLoader`
    positionally is taken for one that leaves the order to its arguments.

    ## Example
    ```python
    train_loader = DataLoader(train_data, batch_size=64)
    ```

    ## Use instead
    ```python
    train_loader = DataLoader(train_data, batch_size=64, shuffle=True)
    ```
    """

    CODE = "TRN401"
    MESSAGE = ("The training `DataLoader` does not shuffle, so every epoch sees the batches in the same order: "
               "pass `shuffle=True` (or a random sampler).")
    SEVERITY = "warning"
    TRIGGERS = ("Loader", "loader")

    VALID = [
        Valid("""
            from torch.utils.data import DataLoader
            train_loader = DataLoader(dataset=train_data, batch_size=64, shuffle=True)
            test_loader = DataLoader(dataset=test_data, batch_size=64)
            """),
        Valid("""
            import torch
            sampler = torch.utils.data.distributed.DistributedSampler(train_set)
            train_loader = torch.utils.data.DataLoader(train_set, batch_size=32, sampler=sampler)
            """),
        # Unknowable flag.
        Valid("""
            from torch.utils.data import DataLoader
            train_loader = DataLoader(train_ds, batch_size=args.bs, shuffle=args.shuffle)
            """),
        # Iterable datasets cannot be shuffled by the loader.
        Valid("""
            from datasets import load_dataset
            from torch.utils.data import DataLoader
            train_ds = load_dataset("c4", "en", split="train", streaming=True)
            train_loader = DataLoader(train_ds, batch_size=8)
            """),
        Valid("""
            from torch.utils.data import DataLoader, IterableDataset
            class Stream(IterableDataset):
                def __iter__(self):
                    yield from range(10)
            train_data = Stream()
            loader = DataLoader(train_data, batch_size=4)
            """),
        # Evaluating on the training set.
        Valid("""
            from torch.utils.data import DataLoader
            train_eval_loader = DataLoader(train_set, batch_size=256)
            """),
        # kwargs dict shuffling unconditionally.
        Valid("""
            from torch.utils.data import DataLoader
            train_kwargs = {"batch_size": 64, "shuffle": True}
            train_loader = DataLoader(dataset1, **train_kwargs)
            """),
        # Both branches of the condition shuffle.
        Valid("""
            import torch
            train_kwargs = {'batch_size': 64}
            if use_accel:
                train_kwargs.update({'num_workers': 1, 'pin_memory': True, 'shuffle': True})
            else:
                train_kwargs.update({'shuffle': True})
            train_loader = torch.utils.data.DataLoader(train_set, **train_kwargs)
            """),
        # pytorch/examples' forward-forward: the shuffle only on an accelerator, but the training set is
        # read once, as a single batch: there are no epochs whose order could repeat.
        Valid("""
            import torch
            from torch.utils.data import DataLoader
            from torchvision.datasets import MNIST
            def main(args):
                use_accel = not args.no_accel and torch.accelerator.is_available()
                train_kwargs = {"batch_size": args.train_size}
                if use_accel:
                    accel_kwargs = {"num_workers": 1, "pin_memory": True, "shuffle": True}
                    train_kwargs.update(accel_kwargs)
                train_loader = DataLoader(MNIST("./data/", train=True, download=True), **train_kwargs)
                x, y = next(iter(train_loader))
                net = Net([784, 500, 500])
                net.train(x.to(device), y.to(device))
            """),
        # A DataLoader subclass of the project that shuffles on its own.
        Valid("""
            import torch
            from data.loaders import BucketLoader
            train_loader = BucketLoader(train_dataset, batch_size=32, num_workers=4)
            """, files={"data/loaders.py": """
            from torch.utils.data import DataLoader, RandomSampler
            class BucketLoader(DataLoader):
                def __init__(self, dataset, **kwargs):
                    super().__init__(dataset, sampler=RandomSampler(dataset), **kwargs)
            """}),
        # A wrapper around a loader (not a DataLoader subclass), and a loader class the run does not define.
        Valid("""
            import torch
            from utils import CudaPrefetcher
            from speech.data import AudioDataLoader
            train_prefetcher = CudaPrefetcher(train_loader)
            train_loader = AudioDataLoader(train_dataset, batch_size=32)
            """, files={"utils.py": """
            import torch
            class CudaPrefetcher:
                def __init__(self, loader):
                    self.loader = loader
                    self.stream = torch.cuda.Stream()
            """}),
        # Shuffled unconditionally before the conditional device options.
        Valid("""
            import torch
            train_kwargs = {'batch_size': 64, 'shuffle': True}
            if use_accel:
                train_kwargs.update({'num_workers': 1, 'pin_memory': True})
            train_loader = torch.utils.data.DataLoader(train_set, **train_kwargs)
            """),
    ]
    INVALID = [
        Invalid("""
            from torch.utils.data import DataLoader
            train_loader = DataLoader(dataset=train_data, batch_size=64)
            """, line=2, column=16),
        Invalid("""
            import torch
            from torchvision import datasets
            ds = datasets.MNIST("data", train=True, download=True)
            loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
            """, line=4),
        # shuffle only when CUDA is available.
        Invalid("""
            import torch
            from torch.utils.data import DataLoader
            use_cuda = torch.cuda.is_available()
            trainloader = DataLoader(trainset, batch_size=128, shuffle=use_cuda)
            """, line=4),
        # pytorch/examples mnist: 'shuffle': True only in the CUDA kwargs.
        Invalid("""
            import torch
            from torchvision import datasets
            use_cuda = not args.no_cuda and torch.cuda.is_available()
            train_kwargs = {'batch_size': args.batch_size}
            if use_cuda:
                cuda_kwargs = {'num_workers': 1, 'pin_memory': True, 'shuffle': True}
                train_kwargs.update(cuda_kwargs)
            dataset1 = datasets.MNIST('../data', train=True, download=True, transform=transform)
            train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
            """, line=9, column=16),
        # pytorch/examples mnist today: the shuffle is merged in only for an accelerator.
        Invalid("""
            import torch
            from torchvision import datasets
            use_accel = not args.no_accel and torch.accelerator.is_available()
            train_kwargs = {'batch_size': args.batch_size}
            if use_accel:
                accel_kwargs = {'num_workers': 1, 'persistent_workers': True, 'pin_memory': True, 'shuffle': True}
                train_kwargs.update(accel_kwargs)
            dataset1 = datasets.MNIST('../data', train=True, download=True, transform=transform)
            train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
            """, line=9, column=16),
        # The first batch drawn again every epoch: the same samples each time without shuffling.
        Invalid("""
            from torch.utils.data import DataLoader
            def main(train_set):
                train_loader = DataLoader(train_set, batch_size=512)
                for epoch in range(10):
                    x, y = next(iter(train_loader))
                    step(x, y)
            """, line=3, column=20),
        # Peeked at once, then iterated for the epochs.
        Invalid("""
            from torch.utils.data import DataLoader
            train_loader = DataLoader(train_dataset, batch_size=64)
            sample, _ = next(iter(train_loader))
            for epoch in range(5):
                for x, y in train_loader:
                    step(x, y)
            """, line=2, column=16),
        # deepspeech.pytorch: the training AudioDataLoader (a DataLoader subclass in another file) unshuffled.
        Invalid("""
            import torch
            from data.data_loader import AudioDataLoader, SpectrogramDataset
            train_dataset = SpectrogramDataset(audio_conf=audio_conf, manifest_filepath=args.train_manifest)
            train_loader = AudioDataLoader(train_dataset, batch_size=args.batch_size,
                                           num_workers=args.num_workers)
            """, line=4, column=16, files={"data/data_loader.py": """
            import torch
            from torch.utils.data import DataLoader, Dataset
            class SpectrogramDataset(Dataset):
                def __getitem__(self, index):
                    return self.parse(self.ids[index])
            class AudioDataLoader(DataLoader):
                def __init__(self, *args, **kwargs):
                    super(AudioDataLoader, self).__init__(*args, **kwargs)
                    self.collate_fn = _collate_fn
            """}),
        # Any flag: shuffle set only when the user asks for a feature.
        Invalid("""
            from torch.utils.data import DataLoader
            loader_args = {"batch_size": 32}
            if args.fast:
                loader_args["shuffle"] = True
            train_loader = DataLoader(train_set, **loader_args)
            """, line=5, column=16),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.values: dict[str, cst.BaseExpression] = {}
        self.iterable_classes: set[str] = set()
        self.targets: list[cst.Assign] = []
        self.scopes: list[cst.CSTNode] = [context.module]  # the enclosing function definitions
        self.ifs: list[_Branch] = []
        # dict name -> shuffle values set by later updates, with the branch they were set in (None: always)
        self.updates: dict[str, list[tuple[Optional[cst.BaseExpression], Optional[_Branch]]]] = {}

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scopes.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if any((dotted_name(b.value) or "").endswith("IterableDataset") for b in node.bases):
            self.iterable_classes.add(node.name.value)

    def visit_If(self, node: cst.If) -> None:
        if self.ifs and self.ifs[-1].node.orelse is node:
            self.ifs[-1] = self.ifs[-1].other()  # an `elif`: the parent's else branch
        self.ifs.append(_Branch(node, False, source_of(self.context, node.test)))

    def visit_Else(self, node: cst.Else) -> None:
        if self.ifs:
            self.ifs[-1] = self.ifs[-1].other()

    def leave_If(self, original_node: cst.If) -> None:
        self.ifs.pop()

    def visit_Assign(self, node: cst.Assign) -> None:
        self.targets.append(node)

    def leave_Assign(self, original_node: cst.Assign) -> None:
        self.targets.pop()
        for target in original_node.targets:
            if isinstance(target.target, cst.Name):
                self.values[target.target.value] = original_node.value
                self.updates.pop(target.target.value, None)
            elif isinstance(target.target, cst.Subscript) and isinstance(target.target.value, cst.Name):
                key = source_of(self.context, target.target.slice[0]) if target.target.slice else ""
                if key.strip("'\"") == _KEY:
                    self._record_update(target.target.value.value, original_node.value)

    def visit_Call(self, node: cst.Call) -> None:
        recv = receiver(node)
        if isinstance(recv, cst.Name) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "update":
            for arg in node.args:
                if arg.keyword is None:
                    known = self._as_dict(arg.value) is not None
                    self._record_update(recv.value, self._dict_value(arg.value), known=known)
                elif arg.keyword.value == _KEY:
                    self._record_update(recv.value, arg.value)
        elif self.qualname(node.func) in _LOADERS:
            message = self._problem(node)
            if message and not self._only_peeked():
                self.report(node, message)
        else:
            self._user_loader(node)

    def _user_loader(self, node: cst.Call) -> None:
        """Report a user class deriving from DataLoader (settled in the project pass) built like one."""
        written = dotted_name(node.func)
        qual = self.qualname(node.func) or written or ""
        if written is None or qual.startswith("torch.") or not written.rsplit(".", 1)[-1][:1].isupper():
            return
        if sum(1 for a in node.args if a.keyword is None) > 2:
            return  # its own signature: positions beyond (dataset, batch_size) may mean anything
        message = self._problem(node)
        if message and not self._only_peeked():
            if message == self.MESSAGE:
                message = _SUBCLASS.format(written)
            self.report_if(Condition("loader", qual), node, message)

    # -- helpers ----------------------------------------------------------------------
    def _only_peeked(self) -> bool:
        """True if the loader being assigned is only ever read as one `next(iter(loader))`, outside loops.

        One batch drawn once (pytorch/examples' forward-forward reads the whole training set as a
        single batch) has no epochs whose order could repeat.
        """
        if not self.targets or len(self.targets[-1].targets) != 1:
            return False
        target = self.targets[-1].targets[0].target
        if not isinstance(target, cst.Name):
            return False
        scope = self.scopes[-1]
        body = scope.body if isinstance(scope, cst.FunctionDef) else scope
        uses = _reads(body, target.value, self.targets[-1], False)
        return bool(uses) and all(uses)

    def _record_update(self, name: str, value: Optional[cst.BaseExpression], known: bool = True) -> None:
        if value is None and known:
            return  # a known dict without "shuffle": changes nothing
        self.updates.setdefault(name, []).append((value, self.ifs[-1] if self.ifs else None))

    def _as_dict(self, expr: cst.BaseExpression) -> Optional[cst.Dict]:
        if isinstance(expr, cst.Name):
            expr = self.values.get(expr.value, expr)
        return expr if isinstance(expr, cst.Dict) else None

    def _dict_value(self, expr: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        found = self._as_dict(expr)
        for element in found.elements if found else ():
            if isinstance(element, cst.DictElement) and source_of(self.context, element.key).strip("'\"") == _KEY:
                return element.value
        return None

    def _problem(self, call: cst.Call) -> Optional[str]:
        dataset = get_arg(call, "dataset", 0)
        if dataset is None or not self._is_training(dataset.value) or self._iterable(dataset.value):
            return None
        if any(get_arg(call, k, p) is not None for k, p in (("sampler", 3), ("batch_sampler", 4))):
            return None
        shuffle = get_arg(call, _KEY, 2)
        starred = [a.value for a in call.args if a.star == "**"]
        if shuffle is not None:
            return self._judge(shuffle.value)
        if any(a.star == "*" for a in call.args) or len(starred) > 1:
            return None
        if starred:
            return self._judge_kwargs(starred[0])
        return self.MESSAGE

    def _judge(self, value: cst.BaseExpression) -> Optional[str]:
        if is_false(value):
            return self.MESSAGE
        if is_true(value):
            return None
        bound = self.values.get(value.value) if isinstance(value, cst.Name) else None
        text = source_of(self.context, value) + (source_of(self.context, bound) if bound is not None else "")
        return _ON_CPU if "is_available" in text or "use_cuda" in text else None

    def _judge_kwargs(self, expr: cst.BaseExpression) -> Optional[str]:
        if not isinstance(expr, cst.Name) or self._as_dict(expr) is None:
            return None  # a dict from elsewhere: unknowable
        updates = self.updates.get(expr.value, [])
        if any(value is None for value, _ in updates):
            return None  # updated from an unknown dict
        unconditional = [v for v, branch in updates if branch is None]
        value = unconditional[-1] if unconditional else self._dict_value(expr)
        if value is not None:
            return self._judge(value)
        shuffled = [branch for v, branch in updates if branch is not None and is_true(v)]
        if not shuffled:
            return None if updates else self.MESSAGE
        if {(id(b.node), b.orelse) for b in shuffled} >= {(id(shuffled[0].node), True), (id(shuffled[0].node), False)}:
            return None  # both branches of one `if` shuffle
        condition = shuffled[0].test
        if any(word in condition.lower() for word in ("cuda", "gpu", "accel", "device")):
            return _ON_CPU if "cuda" in condition.lower() else _ONLY_WHEN.format(condition)
        return _ONLY_WHEN.format(condition)

    def _is_training(self, dataset: cst.BaseExpression) -> bool:
        targets = self.targets[-1].targets if self.targets else ()
        names = " ".join([source_of(self.context, dataset), *(source_of(self.context, t.target) for t in targets)])
        if is_eval_name(names):
            return False
        built = self._built(dataset)
        if isinstance(built, cst.Call):
            flag = get_arg(built, "train")
            split = get_arg(built, "split")
            if flag is not None and (is_true(flag.value) or is_false(flag.value)):
                return is_true(flag.value)
            if split is not None and isinstance(split.value, cst.SimpleString):
                return is_train_name(str(split.value.evaluated_value))
        return is_train_name(names)

    def _built(self, dataset: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        if isinstance(dataset, cst.Name):
            return self.values.get(dataset.value)
        return dataset

    def _iterable(self, dataset: cst.BaseExpression) -> bool:
        built = self._built(dataset)
        if not isinstance(built, cst.Call):
            return False
        name = dotted_name(built.func) or ""
        streaming = get_arg(built, "streaming")
        return (name.rsplit(".", 1)[-1] in self.iterable_classes or "Iterable" in name or "WebDataset" in name
                or "IterDataPipe" in name or (streaming is not None and not is_false(streaming.value)))


def _peek_of(node: cst.CSTNode, name: str) -> bool:
    """True for `next(iter(name))`."""
    if not (isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "next"
            and len(node.args) == 1):
        return False
    inner = node.args[0].value
    return (isinstance(inner, cst.Call) and isinstance(inner.func, cst.Name) and inner.func.value == "iter"
            and len(inner.args) == 1 and isinstance(inner.args[0].value, cst.Name)
            and inner.args[0].value.value == name)


_LOOPS = (cst.For, cst.While, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def _reads(node: cst.CSTNode, name: str, skip: cst.CSTNode, in_loop: bool) -> list[bool]:
    """Every read of ``name`` under ``node``: True for a single `next(iter(name))` outside loops, else False."""
    if node is skip:
        return []
    if _peek_of(node, name):
        return [not in_loop]
    if isinstance(node, cst.Name):
        return [False] if node.value == name else []
    if isinstance(node, (cst.FunctionDef, cst.Lambda, cst.ClassDef)):
        in_loop = True  # a nested function may run any number of times
    found: list[bool] = []
    for child in node.children:
        if isinstance(node, cst.Attribute) and child is node.attr:
            continue  # `args.train_loader` is another name
        if isinstance(node, cst.Arg) and child is node.keyword:
            continue
        found += _reads(child, name, skip, in_loop or isinstance(node, _LOOPS))
    return found

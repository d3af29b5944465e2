"""Whole-script tests of the train/eval, data and checkpoint rules (TRN301-303, TRN401-405, TRN501-502, TRN901)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_traincheck.lint import engine
from pytest_traincheck.analyses.evalflow import is_eval_name, is_train_name
from pytest_traincheck.versions import declared_torch_version, newest_allowed, older_than
from pytest_traincheck.lint.testing import lint_source

CODES = ["TRN301", "TRN302", "TRN303", "TRN401", "TRN402", "TRN403", "TRN404", "TRN405", "TRN501", "TRN502", "TRN901"]

SEED = '''
import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

train_data = datasets.MNIST(root='./data', train=True, transform=ToTensor(), download=True)
test_data = datasets.MNIST(root='./data', train=False, transform=ToTensor())
train_loader = DataLoader(dataset=train_data, batch_size=64, shuffle=True)
test_loader = DataLoader(dataset=test_data, batch_size=64, shuffle=True)

criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=1e-3)


def check_accuracy(loader, model, device):
    correct = 0.
    total = 0.
    model.eval()

    with torch.no_grad():
        for x, y in loader:
            x = x.to(device).squeeze(1)
            y = y.to(device)
            result = model(x)
            _, y_pred = result.max(1)
            correct += (y_pred == y).sum().item()
            total += y_pred.size(0)
{restore}
    return correct / total


for epoch in range(epochs):
    for i, (data, label) in enumerate(train_loader):
        x = data.reshape(data.shape[0], -1)
        loss = criterion(model(x), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(check_accuracy(test_loader, model, device))
'''

# pytorch/examples mnist/main.py, condensed (the CUDA-only shuffle left out: see the TRN401 examples).
MNIST_EXAMPLE = '''
import torch
import torch.nn.functional as F
import torch.optim as optim
from torchvision import datasets, transforms
from torch.optim.lr_scheduler import StepLR


def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()


def main():
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset1 = datasets.MNIST('../data', train=True, download=True, transform=transform)
    dataset2 = datasets.MNIST('../data', train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(dataset1, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(dataset2, batch_size=1000)
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        test(model, device, test_loader)
        scheduler.step()
    if args.save_model:
        torch.save(model.state_dict(), "mnist_cnn.pt")
'''

# torchvision's ImageNet reference data setup.
IMAGENET = '''
import torch
import torchvision.datasets as datasets
import torchvision.transforms as transforms

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
        {val_crop},
        transforms.ToTensor(),
        normalize,
    ]))
if args.distributed:
    train_sampler = torch.utils.data.distributed.DistributedSampler(train_dataset)
    val_sampler = torch.utils.data.distributed.DistributedSampler(val_dataset, shuffle=False, drop_last=True)
else:
    train_sampler = None
    val_sampler = None
train_loader = torch.utils.data.DataLoader(
    train_dataset, batch_size=args.batch_size, shuffle=(train_sampler is None),
    num_workers=args.workers, pin_memory=True, sampler=train_sampler)
val_loader = torch.utils.data.DataLoader(
    val_dataset, batch_size=args.batch_size, shuffle=False,
    num_workers=args.workers, pin_memory=True, sampler=val_sampler)
for epoch in range(args.start_epoch, args.epochs):
    if args.distributed:
        train_sampler.set_epoch(epoch)
    train(train_loader, model, criterion, optimizer, epoch, device, args)
'''

# pytorch/examples distributed/ddp-tutorial-series/multigpu.py, condensed.
DDP_TRAINER = '''
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DataLoader
from torch.utils.data.distributed import DistributedSampler


class Trainer:
    def _run_batch(self, source, targets):
        self.optimizer.zero_grad()
        output = self.model(source)
        loss = F.cross_entropy(output, targets)
        loss.backward()
        self.optimizer.step()

    def _run_epoch(self, epoch):
        self.train_data.sampler.set_epoch(epoch)
        for source, targets in self.train_data:
            self._run_batch(source.to(self.gpu_id), targets.to(self.gpu_id))

    def train(self, max_epochs: int):
        for epoch in range(max_epochs):
            self._run_epoch(epoch)


def prepare_dataloader(dataset: Dataset, batch_size: int):
    return DataLoader(dataset, batch_size=batch_size, pin_memory=True, shuffle=False,
                      sampler=DistributedSampler(dataset))
'''

CHECKPOINT = '''
import torch

def load_checkpoint(path, model, optimizer):
    ckpt = torch.load(path, weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]
'''


def _codes(source: str, codes=CODES) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    findings, _ = lint_source(source, codes)
    return [(f.line, f.code) for f in findings]


def _line_of(source: str, text: str) -> int:
    lines = textwrap.dedent(source).lstrip("\n").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


# -- train / eval discipline -------------------------------------------------------------


def test_seed_check_accuracy_with_train_toggle_is_clean() -> None:
    source = SEED.replace("{restore}", "    model.train()   # Toggle model back to train")
    assert _codes(source, ["TRN301", "TRN302", "TRN303", "TRN401", "TRN403", "TRN404"]) == []


def test_seed_check_accuracy_without_train_toggle_is_flagged_at_eval() -> None:
    source = SEED.replace("{restore}", "")
    assert _codes(source, ["TRN301", "TRN302", "TRN303"]) == [(_line_of(source, "model.eval()"), "TRN301")]


def test_seed_data_is_not_normalized_when_trn402_is_selected() -> None:
    source = SEED.replace("{restore}", "    model.train()")
    assert _codes(source, ["TRN402"]) == [(_line_of(source, "train=True"), "TRN402")]


def test_pytorch_examples_mnist_train_test_pair_is_clean() -> None:
    assert _codes(MNIST_EXAMPLE) == []


def test_the_three_train_eval_rules_share_one_flow() -> None:
    source = '''
    import torch

    def evaluate(model, val_loader):
        for x, y in val_loader:
            out = model(x)

    def validate(model, loader):
        with torch.no_grad():
            for x, y in loader:
                out = model(x)

    def check(model, loader):
        model.eval()
        return 1

    for epoch in range(3):
        for x, y in train_loader:
            model(x).sum().backward()
            opt.step()
        evaluate(model, val_loader)
        validate(model, val_loader)
        check(model, val_loader)
    '''
    found = _codes(source, ["TRN301", "TRN302", "TRN303"])
    assert found == [
        (_line_of(source, "for x, y in val_loader"), "TRN303"),
        (_line_of(source, "with torch.no_grad()"), "TRN302"),
        (_line_of(source, "model.eval()"), "TRN301"),
    ]
    # Each rule alone finds the same thing (the shared flow is rebuilt per traversal).
    for line, code in found:
        assert _codes(source, [code]) == [(line, code)]


def test_evaluation_with_grad_ignores_pytest_functions() -> None:
    source = '''
    def test_model_runs():
        for x, y in val_loader:
            out = model(x)
    '''
    findings, _ = lint_source(source, ["TRN303"], path="tests/test_model.py")
    assert findings == []
    findings, _ = lint_source(source, ["TRN303"], path="train.py")
    assert [f.code for f in findings] == ["TRN303"]


# -- data ------------------------------------------------------------------------------


def test_imagenet_reference_data_setup_is_clean() -> None:
    source = IMAGENET.replace("{val_crop}", "transforms.Resize(256),\n        transforms.CenterCrop(224)")
    assert _codes(source) == []


def test_random_crop_in_imagenet_validation_pipeline_is_flagged() -> None:
    source = IMAGENET.replace("{val_crop}", "transforms.Resize(256),\n        transforms.RandomCrop(224)")
    assert _codes(source) == [(_line_of(source, "RandomCrop(224)"), "TRN404")]


def test_distributed_sampler_with_set_epoch_through_the_loader_is_clean() -> None:
    assert _codes(DDP_TRAINER) == []


def test_distributed_sampler_without_set_epoch_is_flagged() -> None:
    source = DDP_TRAINER.replace("self.train_data.sampler.set_epoch(epoch)", "pass")
    assert _codes(source) == [(_line_of(source, "sampler=DistributedSampler"), "TRN405")]


def test_mnist_cuda_only_shuffle_is_reported_as_cpu_problem() -> None:
    source = '''
    import torch
    from torchvision import datasets
    use_cuda = torch.cuda.is_available()
    train_kwargs = {'batch_size': 64}
    if use_cuda:
        train_kwargs.update({'num_workers': 1, 'pin_memory': True, 'shuffle': True})
    dataset1 = datasets.MNIST('../data', train=True, download=True)
    train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
    '''
    findings, _ = lint_source(source, ["TRN401"])
    assert [f.code for f in findings] == ["TRN401"]
    assert "CUDA" in findings[0].message


def test_view_after_transpose_in_attention() -> None:
    source = '''
    def forward(self, x):
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.h, c // self.h).transpose(1, 2)
        y = attention(q, q, q)
        y = y.transpose(1, 2)
        return self.proj(y.view(b, t, -1))
    '''
    assert _codes(source) == [(_line_of(source, "y.view(b, t, -1)"), "TRN403")]
    assert _codes(source.replace("y.view(b, t, -1)", "y.contiguous().view(b, t, -1)")) == []


# -- checkpoints ------------------------------------------------------------------------


def test_checkpoint_loading_with_weights_only_is_clean() -> None:
    assert _codes(CHECKPOINT) == []


def _lint_for_torch(source: str, codes: list[str], version: str) -> list[str]:
    settings = engine.Settings(tuple(codes), torch_version=version)
    result = engine.lint_bytes("snippet.py", textwrap.dedent(source).encode(), settings)
    return [f.code for f in result.findings]


def test_missing_weights_only_is_flagged_only_for_old_torch() -> None:
    source = "import torch\nstate = torch.load('model.pt', map_location='cpu')\n"
    assert _lint_for_torch(source, ["TRN502"], "2.5.1") == ["TRN502"]
    assert _lint_for_torch(source, ["TRN502"], "2.6") == []
    assert _codes(source, ["TRN502"]) == []


def test_deprecations_newer_than_the_target_torch_are_skipped() -> None:
    source = "import torch\nscaler = torch.cuda.amp.GradScaler()\nouter = torch.ger(a, b)\n"
    assert _lint_for_torch(source, ["TRN901"], "2.2") == ["TRN901"]  # torch.ger only
    assert _lint_for_torch(source, ["TRN901"], "2.4.0") == ["TRN901", "TRN901"]


def test_discarded_load_is_not_hidden_by_a_fix() -> None:
    source = '''
    import torch
    def resume(model, optimizer, path):
        torch.load(path)
        return model
    '''
    findings, fixed = lint_source(source, ["TRN501"], fix=True, unsafe_fixes=True)
    assert [f.code for f in findings] == ["TRN501"]
    # Whatever --fix does, the checkpoint is still not restored, so the finding must remain.
    again, _ = lint_source(fixed, ["TRN501"], dedent=False) if fixed else (findings, None)
    assert [f.code for f in again] == ["TRN501"]


def test_assigned_but_unused_load_is_still_reported() -> None:
    source = '''
    import torch
    def resume(model, optimizer, path):
        checkpoint_1 = torch.load(path)
        return model
    '''
    findings, _ = lint_source(source, ["TRN501"])
    assert [(f.code, f.line) for f in findings] == [("TRN501", 3)]
    assert "checkpoint_1" in findings[0].message and "never used" in findings[0].message


def test_assigned_and_used_load_is_quiet() -> None:
    source = '''
    import torch
    def resume(model, path):
        checkpoint = torch.load(path, weights_only=True)
        model.load_state_dict(checkpoint["model"])
    '''
    assert lint_source(source, ["TRN501"])[0] == []


# -- helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("val_loader", True), ("testloader", True), ("valLoader", True), ("test_data", True),
    ("validation_dataset", True), ("interval", False), ("value", False), ("train_loader", False),
    ("latest", False), ("dev_id", False),
])
def test_is_eval_name(name: str, expected: bool) -> None:
    assert is_eval_name(name) is expected


@pytest.mark.parametrize(("name", "expected"), [
    ("train_data", True), ("trainset", True), ("ds_train", True), ("pretrained", False),
    ("trainer", False), ("test_set", False),
])
def test_is_train_name(name: str, expected: bool) -> None:
    assert is_train_name(name) is expected


@pytest.mark.parametrize(("specifier", "expected"), [
    ("<2.6", "2.5"), ("==2.4.1", "2.4.1"), (">=2.0,<2.5", "2.4"), (">=2.0", None), ("<=2.5.1", "2.5.1"),
    ("==2.3.*", "2.3"), ("~=2.4.0", "2.4.0"), ("", None),
])
def test_newest_allowed(specifier: str, expected: object) -> None:
    assert newest_allowed(specifier) == expected


def test_older_than() -> None:
    assert older_than("2.5.1+cu121", "2.6")
    assert not older_than("2.6.0", "2.6")
    assert not older_than(None, "2.6")


def test_declared_torch_version(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy", "torch>=2.0,<2.6", "torchvision"]\n')
    assert declared_torch_version(pyproject) == "2.5"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["torch>=2.0"]\n')
    assert declared_torch_version(pyproject) is None
    pyproject.write_text('[tool.poetry.dependencies]\npython = "^3.10"\ntorch = "2.4.1"\n')
    assert declared_torch_version(pyproject) == "2.4.1"
    pyproject.write_text('[tool.poetry.dependencies]\ntorch = {version = "^2.3", source = "pytorch"}\n')
    assert declared_torch_version(pyproject) is None  # ^2.3 allows every 2.x
    pyproject.write_text('[project]\nname = "x"\n[project.optional-dependencies]\ngpu = ["torch==2.5.*"]\n')
    assert declared_torch_version(pyproject) == "2.5"
    assert declared_torch_version(tmp_path / "missing.toml") is None

"""Model and loss rules (TRN201-TRN209) on realistic model files, beyond each rule's own examples."""

from __future__ import annotations

from pytest_traincheck.analyses.dataflow import torch_names
from pytest_traincheck.lint.testing import lint_source

MODEL_CODES = ["TRN201", "TRN202", "TRN203", "TRN204", "TRN205", "TRN206", "TRN207", "TRN208", "TRN209"]

RESNET_BLOCK = """
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.linear = nn.Linear(64 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


model = ResNet(BasicBlock, [2, 2, 2, 2])
criterion = nn.CrossEntropyLoss()
for images, labels in loader:
    logits = model(images)
    loss = criterion(logits, labels)
    probs = F.softmax(logits, dim=1)
"""


def codes(findings):
    return [(f.line, f.code) for f in findings]


def test_resnet_block_with_bias_free_convs_is_quiet():
    findings, _ = lint_source(RESNET_BLOCK, MODEL_CODES)
    assert findings == []


def test_conv_bn_with_default_bias_is_flagged_and_fixed():
    source = """
        import torch.nn as nn

        class ConvBNReLU(nn.Module):
            def __init__(self, cin, cout):
                super().__init__()
                self.conv = nn.Conv2d(cin, cout, 3, padding=1)
                self.bn = nn.BatchNorm2d(cout)
                self.relu = nn.ReLU(inplace=True)

            def forward(self, x):
                x = self.conv(x)
                x = self.bn(x)
                return self.relu(x)
        """
    findings, _ = lint_source(source, MODEL_CODES)
    assert codes(findings) == [(6, "TRN202")]
    _, fixed = lint_source(source, ["TRN202"], fix=True, unsafe_fixes=True)
    assert fixed is not None and "nn.Conv2d(cin, cout, 3, padding=1, bias=False)" in fixed
    assert lint_source(fixed, ["TRN202"], dedent=False)[0] == []


def test_classifier_with_log_softmax_and_nll_loss_is_quiet():
    source = """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        import torch.optim as optim


        class Net(nn.Module):
            def __init__(self):
                super(Net, self).__init__()
                self.conv1 = nn.Conv2d(1, 32, 3, 1)
                self.conv2 = nn.Conv2d(32, 64, 3, 1)
                self.dropout = nn.Dropout(0.25)
                self.fc1 = nn.Linear(9216, 128)
                self.fc2 = nn.Linear(128, 10)

            def forward(self, x):
                x = F.relu(self.conv1(x))
                x = F.max_pool2d(F.relu(self.conv2(x)), 2)
                x = torch.flatten(self.dropout(x), 1)
                x = self.fc2(F.relu(self.fc1(x)))
                output = F.log_softmax(x, dim=1)
                return output


        def train(model, device, train_loader, optimizer):
            model.train()
            for data, target in train_loader:
                data, target = data.to(device), target.to(device)
                optimizer.zero_grad()
                output = model(data)
                loss = F.nll_loss(output, target)
                loss.backward()
                optimizer.step()


        model = Net().to("cpu")
        optimizer = optim.Adadelta(model.parameters(), lr=1.0)
        output = model(torch.zeros(1, 1, 28, 28))
        loss = nn.NLLLoss()(output, torch.zeros(1, dtype=torch.long))
        """
    findings, _ = lint_source(source, MODEL_CODES)
    assert findings == []


MODEL_PY = """
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.fc1(x.flatten(1)))
        x = self.fc2(x)
        return F.softmax(x, dim=1)
"""

TRAIN_PY = """
import torch
import torch.nn as nn
from model import Net

model = Net()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = criterion(out, y)
    loss.backward()
    optimizer.step()
"""


def test_two_file_project_softmax_model_flagged_in_train_py():
    findings, _ = lint_source(TRAIN_PY, ["TRN201"], path="train.py", files={"model.py": MODEL_PY})
    assert codes(findings) == [(11, "TRN201")]
    assert "`Net.forward` returns softmax" in findings[0].message
    # Without model.py in the run nothing is known about Net: quiet.
    assert lint_source(TRAIN_PY, ["TRN201"], path="train.py")[0] == []
    # A Net that returns logits: quiet.
    logits_model = MODEL_PY.replace("return F.softmax(x, dim=1)", "return x")
    assert lint_source(TRAIN_PY, ["TRN201"], path="train.py", files={"model.py": logits_model})[0] == []


def test_two_file_project_ignores_a_non_module_class_of_the_same_name():
    plain = "class Net:\n    def forward(self, x):\n        import torch\n        return torch.softmax(x, 1)\n"
    assert lint_source(TRAIN_PY, ["TRN201"], path="train.py", files={"model.py": plain})[0] == []


LIGHTNING = """
import torch
import torch.nn as nn
import torch.nn.functional as F
import pytorch_lightning as pl


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return F.softmax(self.body(x), dim=1)


class LitClassifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = Encoder()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self.model.forward(x)
        self.log("val_loss", F.cross_entropy(out, y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)
"""


def test_lightning_module():
    findings, _ = lint_source(LIGHTNING, MODEL_CODES)
    # self(x) goes through LitClassifier.forward, which returns the Encoder's softmax unchanged:
    # the facts follow the delegation, so the loss on line 27 is flagged too.
    assert codes(findings) == [(10, "TRN202"), (27, "TRN201"), (33, "TRN206"), (34, "TRN201")]


def test_lightning_module_calling_self_on_softmax_forward():
    source = LIGHTNING.replace("return self.model(x)", "return F.softmax(self.model.body(x), dim=1)")
    findings, _ = lint_source(source, ["TRN201"])
    assert (27, "TRN201") in codes(findings)


def test_seed_typos_are_caught():
    source = """
        import torch
        import torch.nn as nn

        class NN(nn.Module):
            def __init__(self, input_size, num_classes):
                self.fc1 = nn.Layer(input_size, 50)
                self.fc2 = nn.Linear(50, num_classes)

            def forward(self, x):
                return self.fc2(torch.relu(self.fc1(x)))

        y = torch.einsm("ij->ji", torch.zeros(2, 3))
        """
    findings, _ = lint_source(source, MODEL_CODES)
    assert codes(findings) == [(5, "TRN207"), (6, "TRN208"), (12, "TRN208")]
    assert "did you mean `nn.Linear`?" in findings[1].message
    assert "did you mean `torch.einsum`?" in findings[2].message


def test_unknown_torch_api_without_torch_uses_the_shipped_list(monkeypatch):
    from pytest_traincheck.analyses import torch_table
    from pytest_traincheck.rules import unknown_torch_api as rule

    monkeypatch.setattr(torch_table, "installed_version", lambda: None)  # a lint-only CI job
    assert torch_table.authoritative()
    assert rule.exists("torch.nn", "Linear")
    assert rule.exists("torch", "distributed")
    assert not rule.exists("torch.nn", "Layer")
    findings, _ = lint_source("import torch.nn as nn\nfc = nn.Layer(3, 4)\n", ["TRN208"])
    assert [(f.line, f.code) for f in findings] == [(2, "TRN208")]


def test_shipped_torch_names_cover_the_checked_modules():
    names = torch_names()
    assert set(names["modules"]) == {"torch", "torch.nn", "torch.nn.functional", "torch.optim", "torch.utils.data"}
    assert "Linear" in names["nn_module_classes"] and "Parameter" not in names["nn_module_classes"]


def test_vgg_style_layer_list():
    source = """
        import torch.nn as nn

        cfg = [64, "M", 128, "M"]

        def make_layers(cfg, batch_norm=False):
            layers = []
            in_channels = 3
            for v in cfg:
                if v == "M":
                    layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
                else:
                    conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
                    if batch_norm:
                        layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                    else:
                        layers += [conv2d, nn.ReLU(inplace=True)]
                    in_channels = v
            return nn.Sequential(*layers)
        """
    assert codes(lint_source(source, ["TRN202"])[0]) == [(12, "TRN202")]


def test_softmax_in_branch_or_for_metrics_only_is_quiet():
    source = """
        import torch
        import torch.nn as nn

        criterion = nn.CrossEntropyLoss()
        def evaluate(model, loader):
            correct = 0
            for x, y in loader:
                logits = model(x)
                loss = criterion(logits, y)
                probs = torch.softmax(logits, dim=-1)
                correct += (probs.argmax(-1) == y).sum().item()
            return correct
        """
    assert lint_source(source, MODEL_CODES)[0] == []


def test_sigmoid_bce_dcgan_discriminator():
    source = """
        import torch.nn as nn

        class Discriminator(nn.Module):
            def __init__(self, ndf=64):
                super().__init__()
                self.main = nn.Sequential(
                    nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
                    nn.LeakyReLU(0.2, inplace=True),
                    nn.Conv2d(ndf, 1, 4, 1, 0, bias=False),
                    nn.Sigmoid(),
                )

            def forward(self, input):
                return self.main(input)

        netD = Discriminator()
        criterion = nn.BCELoss()
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        """
    assert codes(lint_source(source, MODEL_CODES)[0]) == [(19, "TRN204")]


def test_rules_agree_when_run_together():
    """The rules share one tracker: running them all at once must not change any rule's findings."""
    from pytest_traincheck.lint.rule import Invalid
    from pytest_traincheck.lint.registry import rule_by_code

    for code in MODEL_CODES:
        rule = rule_by_code(code)
        for example in rule.INVALID:
            assert isinstance(example, Invalid)
            alone, _ = lint_source(example.source(), [code], files=example.files, dedent=False)
            together, _ = lint_source(example.source(), MODEL_CODES, files=example.files, dedent=False)
            assert [f for f in together if f.code == code] == alone, (code, example.source())


def test_text_cnn_with_conv_list_comprehension():
    source = """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class CNN_Text(nn.Module):
            def __init__(self, V, D, C, Co, Ks):
                super(CNN_Text, self).__init__()
                self.embed = nn.Embedding(V, D)
                self.convs1 = [nn.Conv2d(1, Co, (K, D)) for K in Ks]
                self.dropout = nn.Dropout(0.5)
                self.fc1 = nn.Linear(len(Ks) * Co, C)

            def forward(self, x):
                x = self.embed(x).unsqueeze(1)
                x = [F.relu(conv(x)).squeeze(3) for conv in self.convs1]
                x = torch.cat([F.max_pool1d(i, i.size(2)).squeeze(2) for i in x], 1)
                return self.fc1(self.dropout(x))
        """
    assert codes(lint_source(source, MODEL_CODES)[0]) == [(9, "TRN209")]

"""Golden-ish tests of the training-loop rules (TRN101-106, TRN305) on whole, realistic loops."""

from __future__ import annotations

import textwrap

import pytest

from pytest_traincheck.lint.testing import lint_source

CODES = ["TRN101", "TRN102", "TRN103", "TRN104", "TRN105", "TRN106", "TRN305"]

SEED_REFERENCE = """
import torch
import torch.nn as nn
import torch.optim as optim

class NN(nn.Module):
    def __init__(self, input_size, num_classes):
        super(NN, self).__init__()
        self.fc1 = nn.Linear(input_size, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

model = NN(input_size=784, num_classes=10).to(device)
criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=learning_rate)

for epoch in range(num_epochs):
    for batch_idx, (data, targets) in enumerate(train_loader):
        data = data.to(device=device)
        targets = targets.to(device=device)
        data = data.reshape(data.shape[0], -1)

        # Forward
        scores = model(data)
        loss = criterion(scores, targets)

        # Backward
        optimizer.zero_grad()
        loss.backward()

        # Gradient Descent
        optimizer.step()

def check_accuracy(loader, model):
    num_correct = 0
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            scores = model(x)
            _, predictions = scores.max(1)
            num_correct += (predictions == y).sum()
    model.train()
    return num_correct
"""

MNIST = """
import torch
import torch.nn.functional as F
import torch.optim as optim

def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print(epoch, loss.item())

def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    with torch.no_grad():
        for data, target in test_loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
    return test_loss

def main():
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        test(model, device, test_loader)
"""

DCGAN = """
import torch.optim as optim
optimizerD = optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
optimizerG = optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))
for epoch in range(niter):
    for i, data in enumerate(dataloader, 0):
        netD.zero_grad()
        real_cpu = data[0].to(device)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        fake = netG(noise)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()

        netG.zero_grad()
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        G_losses.append(errG.item())
        D_losses.append(errD.item())
"""

ACCUMULATION = """
import torch
optimizer.zero_grad()
for i, (inputs, labels) in enumerate(training_set):
    predictions = model(inputs)
    loss = loss_function(predictions, labels) / accumulation_steps
    loss.backward()
    if (i + 1) % accumulation_steps == 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
"""

AMP = """
import torch
scaler = torch.amp.GradScaler("cuda")
for epoch in range(epochs):
    for input, target in data:
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            output = net(input)
            loss = loss_fn(output, target)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.1)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
"""

LIGHTNING = """
import torch
import lightning as L

class LitModel(L.LightningModule):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)
"""

LBFGS = """
import torch.optim as optim
optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
for i in range(steps):
    def closure():
        optimizer.zero_grad()
        out = seq(input)
        loss = criterion(out, target)
        loss.backward()
        return loss
    optimizer.step(closure)
    with torch.no_grad():
        pred = seq(test_input)
        test_loss = criterion(pred[:, :-future], test_target)
"""

# word_language_model (old): a manual SGD update, no optimizer step.
MANUAL_SGD = """
import torch
def train():
    total_loss = 0
    for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
        data, targets = get_batch(train_data, i)
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        output, hidden = model(data, hidden)
        loss = criterion(output.view(-1, ntokens), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        total_loss += loss.item()
"""

# The seq2seq tutorial: the model reaches the loop through two functions; the GRU is never clipped.
SEQ2SEQ = """
import torch.nn as nn
from torch import optim

class EncoderRNN(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)

def train_epoch(dataloader, encoder, encoder_optimizer, criterion):
    total_loss = 0
    for data in dataloader:
        input_tensor, target_tensor = data
        encoder_optimizer.zero_grad()
        loss = criterion(encoder(input_tensor), target_tensor)
        loss.backward()
        encoder_optimizer.step()
        total_loss += loss.item()
    return total_loss / len(dataloader)

def train(train_dataloader, encoder, n_epochs, learning_rate=0.001):
    encoder_optimizer = optim.Adam(encoder.parameters(), lr=learning_rate)
    criterion = nn.NLLLoss()
    for epoch in range(1, n_epochs + 1):
        loss = train_epoch(train_dataloader, encoder, encoder_optimizer, criterion)

encoder = EncoderRNN(input_lang.n_words, hidden_size).to(device)
train(train_dataloader, encoder, 80)
"""

REINFORCE = """
import torch
def finish_episode():
    R = 0
    policy_loss = []
    returns = []
    for r in policy.rewards[::-1]:
        R = r + gamma * R
        returns.insert(0, R)
    for log_prob, R in zip(policy.saved_log_probs, returns):
        policy_loss.append(-log_prob * R)
    optimizer.zero_grad()
    policy_loss = torch.cat(policy_loss).sum()
    policy_loss.backward()
    optimizer.step()

for i_episode in count(1):
    state, _ = env.reset()
    for t in range(1, 10000):
        action = select_action(state)
        state, reward, done, _, _ = env.step(action)
        if done:
            break
    finish_episode()
"""

CORRECT = {
    "seed-reference": SEED_REFERENCE,
    "mnist": MNIST,
    "dcgan": DCGAN,
    "accumulation": ACCUMULATION,
    "amp": AMP,
    "lightning": LIGHTNING,
    "lbfgs": LBFGS,
    "manual-sgd": MANUAL_SGD,
    "reinforce": REINFORCE,
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_loops_are_quiet(name: str) -> None:
    findings, _ = lint_source(CORRECT[name], CODES)
    assert findings == [], [(f.line, f.code, f.message) for f in findings]


def _codes(source: str) -> list[tuple[int, str]]:
    findings, _ = lint_source(source, CODES)
    return [(f.line, f.code) for f in findings]


def _line(source: str, text: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line containing ``text`` (after dedent/lstrip)."""
    lines = textwrap.dedent(source).lstrip("\n").splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if text in line]
    return hits[occurrence - 1]


def test_seed_loop_without_zero_grad() -> None:
    source = SEED_REFERENCE.replace("        optimizer.zero_grad()\n", "")
    assert _codes(source) == [(_line(source, "for batch_idx"), "TRN101")]


def test_seed_loop_zero_grad_between_backward_and_step() -> None:
    source = SEED_REFERENCE.replace(
        "        optimizer.zero_grad()\n        loss.backward()\n",
        "        loss.backward()\n        optimizer.zero_grad()\n",
    )
    assert _codes(source) == [(_line(source, "optimizer.zero_grad()"), "TRN102")]


def test_mnist_step_before_backward() -> None:
    source = MNIST.replace(
        "        loss = F.nll_loss(output, target)\n        loss.backward()\n        optimizer.step()\n",
        "        optimizer.step()\n        loss = F.nll_loss(output, target)\n        loss.backward()\n",
    )
    assert _codes(source) == [(_line(source, "optimizer.step()"), "TRN103")]


def test_mnist_loss_accumulated_as_tensor() -> None:
    source = MNIST.replace("            print(epoch, loss.item())\n",
                           "            print(epoch, loss.item())\n        running += loss\n")
    assert _codes(source) == [(_line(source, "running += loss"), "TRN305")]


def test_mnist_training_under_no_grad() -> None:
    source = MNIST.replace(
        "        output = model(data)\n        loss = F.nll_loss(output, target)\n",
        "        with torch.no_grad():\n"
        "            output = model(data)\n"
        "            loss = F.nll_loss(output, target)\n",
    )
    assert _codes(source) == [(_line(source, "loss.backward()"), "TRN104")]


def test_dcgan_generator_never_cleared() -> None:
    source = DCGAN.replace("        netG.zero_grad()\n", "")
    assert _codes(source) == [(_line(source, "for i, data"), "TRN101")]


def test_dcgan_with_optimizer_clearing_is_quiet() -> None:
    source = DCGAN.replace("netD.zero_grad()", "optimizerD.zero_grad()").replace(
        "netG.zero_grad()", "optimizerG.zero_grad()")
    assert _codes(source) == []


def test_accumulation_clip_moved_before_backward() -> None:
    source = ACCUMULATION.replace(
        "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n", "").replace(
        "    predictions = model(inputs)\n",
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    predictions = model(inputs)\n")
    assert _codes(source) == [(_line(source, "clip_grad_norm_"), "TRN106")]


def test_amp_clip_after_step() -> None:
    source = AMP.replace("        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.1)\n", "").replace(
        "        opt.zero_grad()\n",
        "        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.1)\n        opt.zero_grad()\n")
    findings, _ = lint_source(source, CODES)
    assert [(f.line, f.code) for f in findings] == [(_line(source, "clip_grad_norm_"), "TRN106")]
    assert "after `step()`" in findings[0].message


def test_amp_without_clearing_is_fixed_with_the_scalers_optimizer() -> None:
    source = AMP.replace("        opt.zero_grad()\n", "")
    assert _codes(source) == [(_line(source, "for input, target"), "TRN101")]
    _, fixed = lint_source(source, ["TRN101"], fix=True, unsafe_fixes=True)
    assert fixed is not None and "    for input, target in data:\n        opt.zero_grad()\n" in fixed
    assert _codes(fixed) == []


def test_unsafe_fix_needs_the_flag() -> None:
    source = SEED_REFERENCE.replace("        optimizer.zero_grad()\n", "")
    _, fixed = lint_source(source, ["TRN101"], fix=True)
    assert fixed is None


def test_lbfgs_without_closure_clearing() -> None:
    source = LBFGS.replace("        optimizer.zero_grad()\n", "")
    assert _codes(source) == [(_line(source, "for i in range"), "TRN101")]


def test_seq2seq_without_clipping_is_followed_through_call_sites() -> None:
    assert _codes(SEQ2SEQ) == [(_line(SEQ2SEQ, "encoder_optimizer.step()"), "TRN105")]


def test_seq2seq_with_clipping_is_quiet() -> None:
    source = SEQ2SEQ.replace(
        "        encoder_optimizer.step()\n",
        "        nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)\n        encoder_optimizer.step()\n")
    assert _codes(source) == []


def test_seq2seq_model_in_another_file() -> None:
    train = """
        import torch
        from models import Seq2Seq
        model = Seq2Seq(vocab)
        optimizer = torch.optim.Adam(model.parameters())
        for batch in loader:
            optimizer.zero_grad()
            model(batch).backward()
            optimizer.step()
        """
    recurrent = """
        import torch.nn as nn
        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.LSTM(8, 8)
        class Seq2Seq(Encoder):
            pass
        """
    convolutional = recurrent.replace("nn.LSTM(8, 8)", "nn.Conv1d(8, 8, 3)")
    found, _ = lint_source(train, ["TRN105"], files={"models.py": recurrent})
    assert [(f.line, f.code) for f in found] == [(8, "TRN105")]
    found, _ = lint_source(train, ["TRN105"], files={"models.py": convolutional})
    assert found == []


def test_reinforce_step_in_helper_without_clearing() -> None:
    source = REINFORCE.replace("    optimizer.zero_grad()\n", "")
    # The loop calling finish_episode() trains through it: the outer loop is the training loop.
    assert _codes(source) == [(_line(source, "for i_episode"), "TRN101")]


def test_one_line_loop_is_reported_without_fix() -> None:
    source = "for x, y in loader: criterion(model(x), y).backward(); optimizer.step()\n"
    findings, fixed = lint_source(source, ["TRN101"], fix=True, unsafe_fixes=True)
    assert [(f.line, f.code) for f in findings] == [(1, "TRN101")]
    assert fixed is None


def test_opennmt_style_wrapper_is_quiet() -> None:
    source = """
        import torch
        def memory_efficient_loss(outputs, targets, generator, crit):
            loss = 0
            for out_t, targ_t in zip(outputs, targets):
                loss_t = crit(generator(out_t), targ_t)
                loss += loss_t.item()
                loss_t.div(batch_size).backward()
            return loss

        def train_model(model, train_data, optim):
            def train_epoch(epoch):
                total_loss = 0
                for i in range(len(train_data)):
                    model.zero_grad()
                    outputs = model(train_data[i])
                    loss = memory_efficient_loss(outputs, targets, model.generator, criterion)
                    optim.step()
                    total_loss += loss
                return total_loss
            for epoch in range(epochs):
                train_epoch(epoch)
        """
    assert _codes(source) == []


def test_multi_task_loss_summed_then_backpropagated_is_quiet() -> None:
    source = """
        for batch in loader:
            optimizer.zero_grad()
            loss_total = 0
            for task in tasks:
                loss = task.criterion(model(batch), batch[task.name])
                loss_total = loss_total + loss
            loss_total.backward()
            optimizer.step()
        """
    assert _codes(source) == []


def test_deepspeed_engine_steps_are_not_optimizer_steps() -> None:
    source = """
        for step, batch in enumerate(data_loader):
            loss = model_engine(batch)
            model_engine.backward(loss)
            model_engine.step()
        """
    assert _codes(source) == []


# The transfer-learning tutorial: one loop for both phases, grad mode from a variable.
TRANSFER_LEARNING = """
import torch
def train_model(model, criterion, optimizer, scheduler, num_epochs=25):
    for epoch in range(num_epochs):
        for phase in ["train", "val"]:
            running_loss = 0.0
            running_corrects = 0
            for inputs, labels in dataloaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            if phase == "train":
                scheduler.step()
    return model
"""

# timm-style: a loss scaler object does backward, clipping and step; a project clip helper.
TIMM = """
import torch
def train_one_epoch(model, loader, optimizer, loss_fn, loss_scaler=None, clip_grad=None):
    for batch_idx, (input, target) in enumerate(loader):
        with amp_autocast():
            output = model(input)
            loss = loss_fn(output, target)
        optimizer.zero_grad()
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=clip_grad, parameters=model.parameters())
        else:
            loss.backward(create_graph=second_order)
            if clip_grad is not None:
                dispatch_clip_grad(model.parameters(), value=clip_grad)
            optimizer.step()
        torch.cuda.synchronize()
        losses_m.update(loss.item(), input.size(0))
"""

# detectron2-style: the loop calls a method of the same class that does the whole step.
DETECTRON = """
class SimpleTrainer:
    def train(self, start_iter, max_iter):
        for self.iter in range(start_iter, max_iter):
            self.before_step()
            self.run_step()
            self.after_step()

    def run_step(self):
        data = next(self._data_loader_iter)
        loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.optimizer.step()
"""

MORE_CORRECT = {"transfer-learning": TRANSFER_LEARNING, "timm": TIMM, "detectron": DETECTRON}


@pytest.mark.parametrize("name", sorted(MORE_CORRECT))
def test_more_correct_loops_are_quiet(name: str) -> None:
    findings, _ = lint_source(MORE_CORRECT[name], CODES)
    assert findings == [], [(f.line, f.code, f.message) for f in findings]


def test_detectron_without_clearing_is_found_through_the_method() -> None:
    source = DETECTRON.replace("        self.optimizer.zero_grad()\n", "")
    assert _codes(source) == [(_line(source, "for self.iter"), "TRN101")]


def test_transfer_learning_accumulating_the_tensor() -> None:
    source = TRANSFER_LEARNING.replace("running_loss += loss.item() * inputs.size(0)",
                                       "running_loss += loss * inputs.size(0)")
    assert _codes(source) == [(_line(source, "running_loss += loss"), "TRN305")]


def test_a_failing_loop_rule_leaves_the_others_working(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_traincheck.rules.missing_grad_clipping import MissingGradClipping

    def boom(self: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(MissingGradClipping, "check", boom)
    source = SEED_REFERENCE.replace("        optimizer.zero_grad()\n", "")
    findings, _ = lint_source(source, CODES)
    assert sorted((f.line, f.code) for f in findings) == [
        (1, "TRN001"), (_line(source, "for batch_idx"), "TRN101")]


def test_clipping_values_is_not_clipping_gradients() -> None:
    source = """
        import torch
        import torch.nn as nn
        policy = nn.GRU(4, 4)
        optimizer = torch.optim.Adam(policy.parameters())
        for batch in loader:
            ratio = torch.exp(policy(batch.obs)[0] - batch.old_logp)
            loss = -torch.min(ratio * batch.adv, torch.clip(ratio, 0.8, 1.2) * batch.adv).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        """
    assert _codes(source) == [(_line(source, "optimizer.step()"), "TRN105")]

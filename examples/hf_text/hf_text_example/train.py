"""Train the encoder on synthetic token sequences with dict batches, as a Hugging Face script would."""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from hf_text_example.model import EncoderConfig, EncoderForSequenceClassification

CONFIG = EncoderConfig()


class KeywordDataset(Dataset):
    """Padded random token sequences; the label is which keyword token (1, 2 or 3) they contain."""

    def __init__(self, size: int, seed: int, config: EncoderConfig = CONFIG) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, config.num_labels, (size,), generator=g)
        lengths = torch.randint(config.max_length // 2, config.max_length + 1, (size,), generator=g)
        ids = torch.randint(config.num_labels + 1, config.vocab_size, (size, config.max_length), generator=g)
        spots = torch.randint(0, config.max_length // 2, (size, 2), generator=g)
        ids[torch.arange(size)[:, None], spots] = self.labels[:, None] + 1
        self.mask = (torch.arange(config.max_length)[None] < lengths[:, None]).long()
        self.ids = ids * self.mask  # pad with token 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def make_model() -> EncoderForSequenceClassification:
    """Build a fresh randomly initialised encoder from the config."""
    return EncoderForSequenceClassification(CONFIG)


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    """AdamW, as Hugging Face training scripts use."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)


def loaders(batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    """Return the shuffled training loader and the evaluation loader (dict batches)."""
    return (DataLoader(KeywordDataset(512, seed=0), batch_size=batch_size, shuffle=True),
            DataLoader(KeywordDataset(128, seed=1), batch_size=64))


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer: Any, loss_fn: Any = None) -> Any:
    """One step on a dict batch: the model computes its own loss from `labels`."""
    optimizer.zero_grad()
    out = model(**batch)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return out.loss


def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    """Return the accuracy over ``loader`` in eval mode without gradients."""
    model.eval()
    right = total = 0
    with torch.no_grad():
        for batch in loader:
            logits = model(batch["input_ids"], batch["attention_mask"]).logits
            right += int((logits.argmax(1) == batch["labels"]).sum())
            total += len(batch["labels"])
    model.train()
    return right / max(total, 1)


def make_training() -> Any:
    """Declare the setup for `pytest --train-sanity`: no `loss_fn`, the model returns `.loss`."""
    from pytest_traincheck import Training

    train, test = loaders()
    return Training(name="hf-text", model=make_model, optimizer=make_optimizer, data=train, eval_data=test,
                    step=train_step, evaluate=evaluate)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Train for a few epochs and return the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    train, test = loaders()
    for epoch in range(args.epochs):
        for batch in train:
            train_step(model, batch, optimizer)
        accuracy = evaluate(model, test)
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.1%}")
    return accuracy


if __name__ == "__main__":
    main()

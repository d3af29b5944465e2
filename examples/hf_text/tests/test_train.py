"""Fast tests of the example project; the training checks run with `pytest --train-sanity`."""

from __future__ import annotations

import torch

from hf_text_example.train import CONFIG, KeywordDataset, make_model


def test_model_returns_loss_and_logits_from_a_dict_batch() -> None:
    batch = {k: torch.stack([KeywordDataset(4, seed=0)[i][k] for i in range(4)])
             for k in ("input_ids", "attention_mask", "labels")}
    out = make_model()(**batch)
    assert out.logits.shape == (4, CONFIG.num_labels)
    assert out.loss is not None and out.loss.ndim == 0

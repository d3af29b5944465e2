"""A tiny GAN on 2-D points: a generator and a discriminator, each with its own optimizer."""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

NOISE = 8


def ring(n: int, seed: int = 0) -> torch.Tensor:
    """Return ``n`` points near the unit circle (the distribution the generator must learn)."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=g) * 2 * torch.pi
    return torch.stack([angle.cos(), angle.sin()], 1) + 0.05 * torch.randn(n, 2, generator=g)


def make_models() -> dict[str, nn.Module]:
    """Build a fresh generator and discriminator."""
    generator = nn.Sequential(nn.Linear(NOISE, 32), nn.LeakyReLU(0.2), nn.Linear(32, 2))
    discriminator = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    return {"generator": generator, "discriminator": discriminator}


OPTIMIZERS = {"generator": lambda params: torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.999)),
              "discriminator": lambda params: torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.999))}


def train_step(models: Any, batch: Any, optimizers: dict[str, Any], loss_fn: Any = None) -> dict[str, Any]:
    """One discriminator update, then one generator update; return both losses."""
    generator, discriminator = models["generator"], models["discriminator"]
    real = batch[0] if isinstance(batch, (tuple, list)) else batch
    noise = torch.randn(len(real), NOISE, device=real.device)

    optimizers["discriminator"].zero_grad()
    fake = generator(noise).detach()  # the discriminator's update must not train the generator
    real_logits, fake_logits = discriminator(real), discriminator(fake)
    d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    d_loss.backward()
    optimizers["discriminator"].step()

    optimizers["generator"].zero_grad()
    fooled = discriminator(generator(noise))
    g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
    g_loss.backward()
    optimizers["generator"].step()
    return {"loss": d_loss + g_loss, "d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


def loader(n: int = 512) -> DataLoader:
    """Return a shuffled loader of real points (1-tuples: there are no labels)."""
    return DataLoader(TensorDataset(ring(n)), batch_size=32, shuffle=True)


def make_training() -> Any:
    """Declare the GAN for `pytest --train-sanity`: a dict of models and a dict of optimizers."""
    from pytest_traincheck import Training

    return Training(name="gan", model=make_models, optimizer=OPTIMIZERS, data=loader(), step=train_step)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Train and return the mean distance of generated points from the unit circle."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    models = make_models()
    optimizers = {k: OPTIMIZERS[k](models[k].parameters()) for k in models}
    for _ in range(args.epochs):
        for batch in loader():
            train_step(models, batch, optimizers)
    with torch.no_grad():
        points = models["generator"](torch.randn(1000, NOISE))
    error = float((points.norm(dim=1) - 1).abs().mean())
    print(f"generated points lie {error:.3f} from the circle on average")
    return error


if __name__ == "__main__":
    main()

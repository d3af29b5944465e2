"""A tiny GAN with two optimizers checked by traincheck."""

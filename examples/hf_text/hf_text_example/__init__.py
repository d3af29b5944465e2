"""A Hugging Face-shaped text classifier checked by traincheck."""

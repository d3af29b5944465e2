"""A LightningModule checked by traincheck without a Trainer."""

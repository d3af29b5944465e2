"""Dataset checks for CSV + image datasets and the ``traincheck data`` command."""

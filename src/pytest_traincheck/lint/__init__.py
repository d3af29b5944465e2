"""The static engine: discovery, cache, the one-traversal walk, noqa, fixes, the project pass and output formats.

Rules live in ``pytest_traincheck.rules`` (one module per code) and the shared
analyses they read in ``pytest_traincheck.analyses``. Nothing here imports torch.
"""

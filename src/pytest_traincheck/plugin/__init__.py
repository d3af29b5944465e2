"""The pytest11 entry point: options always, collection only with `--train-sanity`.

Nothing here imports torch; the collecting sub-plugin (and torch) load only when
the checks are enabled, and the `train_sanity` fixture imports them when used.
"""

from __future__ import annotations

import pytest

from pytest_traincheck.fixtures.pytest_fixtures import (
    add_mnist_options,
    mnist_root,
    mnist_test_loader,
    mnist_train_loader,
    reference_net,
    reference_training,
)
from pytest_traincheck.plugin.fixture import train_sanity
from pytest_traincheck.plugin.options import add_options, read_options

__all__ = [
    "mnist_root",
    "mnist_test_loader",
    "mnist_train_loader",
    "reference_net",
    "reference_training",
    "train_sanity",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register `--train-sanity*`, `--mnist-root` and their ini keys."""
    add_options(parser)
    add_mnist_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Undo a rootdir that pytest chose from a path option's value before this plugin was loaded."""
    from pytest_traincheck.plugin.rootdir import repair_rootdir

    repair_rootdir(early_config, args)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, and the collecting sub-plugin when the checks are enabled."""
    config.addinivalue_line("markers", "train_sanity: a traincheck training sanity check item")
    if config.getoption("train_sanity") or config.getini("train_sanity"):
        from pytest_traincheck.plugin.collect import SanityPlugin

        config.pluginmanager.register(SanityPlugin(config, read_options(config)), "traincheck-sanity")

"""Deprecated location of the training configuration: use :mod:`agents.cli.config`."""

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    from agents.cli import config

    warnings.warn(f"agents.config.{name} moved to agents.cli.config.{name}.", DeprecationWarning, stacklevel=2)
    return getattr(config, name)

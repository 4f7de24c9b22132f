"""What every entry point does first: read the settings once, set up logging once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ccf.logs import setup_logging
from ccf.settings import Settings, load_settings

T = TypeVar("T")


def from_environment(build: Callable[[Settings], T]) -> T:
    """``build(settings)`` with the settings of the ``CCF_*`` environment, after logging is set up."""
    settings = load_settings()
    setup_logging(settings.log_level)
    return build(settings)

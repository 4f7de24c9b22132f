"""Logging setup, called once by entry points (never on import)."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Send log records to stderr at ``level``. Safe to call twice: the second call only changes the level."""
    root = logging.getLogger()
    if not any(getattr(h, "_ccf", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._ccf = True  # type: ignore[attr-defined]  # marks our handler so a second call does not add another
        root.addHandler(handler)
    root.setLevel(level.upper())

"""Which sync rule keeps which venue's books: data, not ``if`` s.

Each entry names a venue module and the factory in it that returns a fresh :class:`ccf.book.SyncRule` for one
symbol. Modules are imported only when a book of that venue is first needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ccf.book import SyncRule

# venue name -> (module, factory, positional args)
RULES: dict[str, tuple[str, str, tuple[Any, ...]]] = {
    "binance": ("ccf.venues.binance", "new_sync", ("binance",)),
    "binance_us": ("ccf.venues.binance", "new_sync", ("binance_us",)),
    "binance_futures": ("ccf.venues.binance", "new_sync", ("binance_futures",)),
    "binance_delivery": ("ccf.venues.binance", "new_sync", ("binance_delivery",)),
    "coinbase": ("ccf.venues.coinbase", "CoinbaseRule", ()),
    "kraken": ("ccf.venues.kraken", "KrakenRule", ()),
    "okx": ("ccf.venues.okx", "OkxRule", ()),
    "bybit": ("ccf.venues.bybit", "BybitRule", ()),
    # the synthetic venue numbers its diffs like Binance spot (U = previous u + 1)
    "synthetic": ("ccf.venues.binance", "new_sync", ("binance",)),
}


def register(venue: str, module: str, factory: str, *args: Any) -> None:
    """Add or replace a venue's rule factory."""
    RULES[venue] = (module, factory, args)


def new_rule(venue: str) -> SyncRule:
    """A fresh sync rule for one symbol of ``venue``; ``KeyError`` names the known venues."""
    try:
        module, factory, args = RULES[venue]
    except KeyError:
        raise KeyError(f"no book sync rule for venue {venue!r}; known: {', '.join(sorted(RULES))}") from None
    fn: Callable[..., SyncRule] = getattr(importlib.import_module(module), factory)
    return fn(*args)

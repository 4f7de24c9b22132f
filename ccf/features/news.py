"""Which symbols a news item is about: its title and summary name the base asset.

A news item counts in a symbol's window by the time we *fetched* it (never its claimed publication time), so no
feature can look ahead.

>>> from ccf.schemas import NewsItem
>>> item = NewsItem(id="1", feed="f", title="Ether ETFs see record inflows as Bitcoin stalls", link="", published=None,
...                 fetched=0)
>>> sorted(mentioned_bases(item))
['BTC', 'ETH']
>>> route_news([item], [("binance", "ETH-USDT"), ("binance", "SOL-USDT")])
[('binance:ETH-USDT', [NewsItem(id='1', feed='f', title='Ether ETFs see record inflows as Bitcoin stalls', link='', published=None, fetched=0, summary='')])]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from ccf.schemas import NewsItem

# base asset -> words that name it in English news (matched as whole words, case-insensitive)
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "BTC": ("btc", "bitcoin", "xbt"),
    "ETH": ("eth", "ether", "ethereum"),
    "SOL": ("sol", "solana"),
    "XRP": ("xrp", "ripple"),
    "BNB": ("bnb", "binance coin"),
    "DOGE": ("doge", "dogecoin"),
    "ADA": ("ada", "cardano"),
    "AVAX": ("avax", "avalanche"),
    "DOT": ("polkadot",),
    "LINK": ("chainlink",),
    "LTC": ("ltc", "litecoin"),
    "TRX": ("trx", "tron"),
}
_PATTERNS: Final = {base: re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
                    for base, words in ALIASES.items()}


def mentioned_bases(item: NewsItem) -> set[str]:
    text = f"{item.title} {item.summary}"
    return {base for base, pat in _PATTERNS.items() if pat.search(text)}


def route_news(items: Iterable[NewsItem], symbols: Sequence[tuple[str, str]]) -> list[tuple[str, list[NewsItem]]]:
    """Keyed chunks ``("venue:SYMBOL", [news])`` for every configured symbol whose base asset a news item names."""
    by_base: dict[str, list[str]] = {}
    for venue, symbol in symbols:
        by_base.setdefault(symbol.split("-")[0].upper(), []).append(f"{venue}:{symbol}")
    out: dict[str, list[NewsItem]] = {}
    for item in items:
        for base in mentioned_bases(item):
            for key in by_base.get(base, ()):
                out.setdefault(key, []).append(item)
    return list(out.items())

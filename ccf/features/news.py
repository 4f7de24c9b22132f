"""Which symbols a news item is about: its title and summary name the base asset; and its sentiment, once.

A news item counts in a symbol's window by the time we *fetched* it (never its claimed publication time), so no
feature can look ahead. The flow scores each item once (:func:`scored`, VADER through :mod:`ccf.news.sentiment`)
and routes ``(item, sentiment)`` pairs, so an item named by many symbols is not scored again for each.

>>> from ccf.schemas import NewsItem
>>> item = NewsItem(id="1", feed="f", title="Ether ETFs see record inflows as Bitcoin stalls", link="", published=None,
...                 fetched=0)
>>> sorted(mentioned_bases(item))
['BTC', 'ETH']
>>> [(key, [(i.id, s) for i, s in pairs]) for key, pairs in route_news([(item, 0.25)], [("binance", "ETH-USDT"),
...                                                                                     ("binance", "SOL-USDT")])]
[('binance:ETH-USDT', [('1', 0.25)])]
>>> route_news([item], [("binance", "BTC-USDT")])[0][1][0] == (item, news_sentiment(item))
True
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


Scored = tuple[NewsItem, float]
"""A news item and its sentiment in [-1, 1]."""


def mentioned_bases(item: NewsItem) -> set[str]:
    text = f"{item.title} {item.summary}"
    return {base for base, pat in _PATTERNS.items() if pat.search(text)}


def news_sentiment(item: NewsItem) -> float:
    """The item's sentiment in [-1, 1] (:func:`ccf.news.sentiment.item_sentiment`; the analyser loads on first use)."""
    from ccf.news.sentiment import item_sentiment

    return item_sentiment(item)


def scored(items: Iterable[NewsItem | Scored]) -> list[Scored]:
    """Each item with its sentiment (items that come scored keep theirs)."""
    return [i if isinstance(i, tuple) else (i, news_sentiment(i)) for i in items]


def route_news(items: Iterable[NewsItem | Scored], symbols: Sequence[tuple[str, str]]) -> list[tuple[str, list[Scored]]]:
    """Keyed chunks ``("venue:SYMBOL", [(news, sentiment)])`` for every configured symbol whose base asset a news
    item names (items not scored yet are scored here)."""
    by_base: dict[str, list[str]] = {}
    for venue, symbol in symbols:
        by_base.setdefault(symbol.split("-")[0].upper(), []).append(f"{venue}:{symbol}")
    out: dict[str, list[Scored]] = {}
    for pair in scored(items):
        for base in mentioned_bases(pair[0]):
            for key in by_base.get(base, ()):
                out.setdefault(key, []).append(pair)
    return list(out.items())

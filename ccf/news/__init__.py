"""News ingestion: RSS/Atom polling into :class:`~ccf.schemas.NewsItem` records.

- :mod:`ccf.news.parse`: ``parse_feed(bytes) -> (items, FeedStatus)``, pure and total (never raises on content).
- :mod:`ccf.news.state`: per-feed state, backoff arithmetic, the bounded seen-set and its atomic JSON file.
- :mod:`ccf.news.poller`: :class:`NewsPoller`, conditional GETs with httpx, per-feed backoff, dedup.
- :mod:`ccf.news.source`: :class:`NewsSource`, the Bytewax input (background thread, snapshot = poller state).
- :mod:`ccf.news.sentiment`: VADER's compound score of an item's title and summary, in [-1, 1] (the features flow
  scores each item once: its ``news`` table row and its windows' ``news_sentiment``).

Every item keeps the feed's claimed ``published`` time and our ``fetched`` time; features use ``fetched``.
"""

from __future__ import annotations

from ccf.news.parse import FeedStatus, clean_text, entry_id, parse_feed
from ccf.news.poller import NewsPoller
from ccf.news.source import NewsSource
from ccf.news.state import FeedState, PollerState, backoff_s, load_state, save_state

__all__ = [
    "FeedState",
    "FeedStatus",
    "NewsPoller",
    "NewsSource",
    "PollerState",
    "backoff_s",
    "clean_text",
    "entry_id",
    "load_state",
    "parse_feed",
    "save_state",
]

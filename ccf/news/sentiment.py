"""Sentiment of a news item: VADER's compound score of its title and summary, in [-1, 1].

VADER (``vaderSentiment``, MIT) is a lexicon and rules, no trained weights: its lexicon ships inside the package, so
nothing is downloaded, and the same text always scores the same (a replayed item gives the same row). The analyser
is built on first use (it reads its lexicon files then), never on import. Pure apart from that one read; picklable
callers keep only floats.

>>> sentiment("Bitcoin soars to a record high as investors cheer") > 0.3
True
>>> sentiment("Crypto exchange collapses amid fraud charges") < -0.3
True
>>> sentiment(""), sentiment("   ")
(0.0, 0.0)
>>> sentiment("Ether ETFs", "<p>Inflows <b>surge</b></p>") == sentiment("Ether ETFs", "Inflows surge")
True
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ccf.schemas import NewsItem

_TAG: Final = re.compile(r"<[a-zA-Z/!][^>]*>")


@functools.cache
def _analyser() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def plain(text: str) -> str:
    """``text`` without HTML tags (and its entities decoded) when it carries any; unchanged otherwise.

    >>> plain("<p>Bitcoin &amp; <b>ether</b></p>"), plain("a < b and c > d")
    ('Bitcoin & ether', 'a < b and c > d')
    """
    if not _TAG.search(text):
        return text
    from ccf.news.parse import clean_text

    return clean_text(text)


def sentiment(title: str, summary: str = "") -> float:
    """VADER's compound score of ``title`` and ``summary`` together, in [-1, 1]; 0.0 for no text."""
    text = " ".join(p for p in (plain(title).strip(), plain(summary).strip()) if p)
    if not text:
        return 0.0
    score = float(_analyser().polarity_scores(text)["compound"])
    return max(-1.0, min(1.0, score))


def item_sentiment(item: NewsItem) -> float:
    """:func:`sentiment` of a news item's title and summary."""
    return sentiment(item.title, item.summary)

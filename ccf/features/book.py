"""Features of one order book at one instant: mid, spread, microprice, depth and imbalance.

Pure functions of the top levels: ``bids`` best first (descending price), ``asks`` best first (ascending).

>>> bids = [(99.0, 2.0), (98.0, 1.0)]
>>> asks = [(101.0, 1.0), (102.0, 3.0)]
>>> f = book_features(bids, asks, levels=(1, 2))
>>> f["mid"], f["spread"], f["microprice"]
(100.0, 2.0, 100.33333333333333)
>>> f["depth_bid_1"], f["depth_ask_2"], f["imbalance_1"], f["imbalance_2"]
(2.0, 4.0, 0.3333333333333333, -0.14285714285714285)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ccf.schemas import Level

NAN = math.nan


def book_feature_names(levels: Sequence[int]) -> list[str]:
    """Column names :func:`book_features` returns, in order.

    >>> book_feature_names((1,))
    ['best_bid', 'best_ask', 'best_bid_size', 'best_ask_size', 'mid', 'spread', 'spread_bps', 'microprice', 'depth_bid_1', 'depth_ask_1', 'imbalance_1']
    """
    names = ["best_bid", "best_ask", "best_bid_size", "best_ask_size", "mid", "spread", "spread_bps", "microprice"]
    for n in levels:
        names += [f"depth_bid_{n}", f"depth_ask_{n}", f"imbalance_{n}"]
    return names


def book_features(bids: Sequence[Level], asks: Sequence[Level], levels: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Features of a book given its best levels (at least ``max(levels)`` of each side when the book has them).

    A one-sided or empty book gives NaN prices; depth counts what is there. Microprice weighs each touch price by
    the size on the *other* side (Stoikov's weighted mid). Imbalance is ``(bid - ask) / (bid + ask)`` in ``[-1, 1]``.
    """
    out: dict[str, float] = {}
    if bids and asks:
        bp, bs = bids[0]
        ap, az = asks[0]
        mid = (bp + ap) / 2.0
        out["best_bid"], out["best_ask"], out["best_bid_size"], out["best_ask_size"] = bp, ap, bs, az
        out["mid"] = mid
        out["spread"] = ap - bp
        out["spread_bps"] = (ap - bp) / mid * 1e4
        out["microprice"] = (bp * az + ap * bs) / (bs + az) if bs + az > 0 else mid
    else:
        for name in ("best_bid", "best_ask", "best_bid_size", "best_ask_size", "mid", "spread", "spread_bps",
                     "microprice"):
            out[name] = NAN
    for n in levels:
        db = sum(s for _, s in bids[:n])
        da = sum(s for _, s in asks[:n])
        out[f"depth_bid_{n}"] = db
        out[f"depth_ask_{n}"] = da
        out[f"imbalance_{n}"] = (db - da) / (db + da) if db + da > 0 else 0.0
    return out

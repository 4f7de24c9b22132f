"""Table layouts shared by every sink: one name per column, the same in QuestDB, DuckDB, Parquet and Kafka.

Timestamps are int ns in records, DuckDB and Parquet; QuestDB stores them as its TIMESTAMP type.

>>> t = features_table((1,))
>>> t.name, t.designated, t.keys[:2]
('features', 'window_start', ('window_start', 'venue'))
>>> quantile_column(0.1), quantile_column(0.5), quantile_column(0.975)
('q10', 'q50', 'q97_5')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ccf.features.klines import KLINE_FEATURES
from ccf.features.news import mentioned_bases
from ccf.features.seed import seed_feature_names
from ccf.features.windows import feature_names
from ccf.schemas import FeatureRow, NewsItem, Prediction, Score
from ccf.settings import FeatureSettings


@dataclass(frozen=True)
class Table:
    """A table: its columns (name → kind), its designated timestamp, and its dedup keys."""

    name: str
    columns: tuple[tuple[str, str], ...]  # kind: ts | symbol | str | float | int | bool
    designated: str
    keys: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]


def quantile_column(q: float) -> str:
    pct = f"{q * 100:g}".replace(".", "_")
    return f"q{pct}"


def features_table(levels: Sequence[int] = (1, 5, 10), extra: Sequence[str] = ()) -> Table:
    """The features table; ``extra``: the columns a feature set adds (the seed set's, when the settings choose it)."""
    cols: list[tuple[str, str]] = [
        ("window_start", "ts"),
        ("window_end", "ts"),
        ("venue", "symbol"),
        ("symbol", "symbol"),
        ("feature_set", "symbol"),
        ("book_valid", "bool"),
        ("epoch", "int"),
    ]
    names = feature_names(levels)
    names += [k for k in KLINE_FEATURES if k not in names]  # kline-mode rows fill these; book rows leave them null
    names += [k for k in extra if k not in names]
    cols += [(name, "float") for name in names]
    return Table("features", tuple(cols), "window_start", ("window_start", "venue", "symbol"))


def feature_set_columns(features: FeatureSettings) -> list[str]:
    """The columns the chosen feature set adds to :func:`features_table`'s (none for ``book``)."""
    if features.feature_set == "seed":
        return seed_feature_names(features.vwap_quantities, features.ema_spans)
    return []


def predictions_table(quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> Table:
    cols: list[tuple[str, str]] = [
        ("issued_at", "ts"),
        ("target_time", "ts"),
        ("venue", "symbol"),
        ("symbol", "symbol"),
        ("model", "symbol"),
        ("model_version", "symbol"),
        ("horizon_steps", "int"),
        ("horizon_s", "float"),
        ("value", "float"),
    ]
    cols += [(quantile_column(q), "float") for q in quantiles]
    return Table("predictions", tuple(cols), "issued_at", ("issued_at", "venue", "symbol", "model", "horizon_steps"))


SCORES = Table(
    "scores",
    (
        ("window_end", "ts"),
        ("venue", "symbol"),
        ("symbol", "symbol"),
        ("model", "symbol"),
        ("horizon_steps", "int"),
        ("n", "int"),
        ("mae", "float"),
        ("rmse", "float"),
        ("hit_rate", "float"),
        ("pinball", "float"),
        ("coverage", "float"),
        ("skill", "float"),
    ),
    "window_end",
    ("window_end", "venue", "symbol", "model", "horizon_steps"),
)

HEALTH = Table(
    "health",
    (
        ("ts", "ts"),
        ("venue", "symbol"),
        ("symbol", "symbol"),
        ("kind", "symbol"),
        ("value", "float"),
        ("detail", "str"),
        ("seq", "int"),  # tells apart problems of the same (ts, venue, symbol, kind): see ccf.store.sinks.health_rows
    ),
    "ts",
    ("ts", "venue", "symbol", "kind", "seq"),
)


NEWS = Table(
    "news",
    (
        ("fetched", "ts"),  # when we first saw it: the time features use
        ("id", "str"),
        ("feed", "symbol"),
        ("title", "str"),
        ("link", "str"),
        ("published", "ts"),  # what the feed claims; null when it claims nothing
        ("sentiment", "float"),  # compound score in [-1, 1] of title + summary (ccf.news.sentiment)
        ("bases", "str"),  # base assets the item names, comma-separated ("BTC,ETH"), empty when none
    ),
    "fetched",
    ("fetched", "id"),
)
"""One row per news item: the same item (same id, same fetch time) replayed upserts the same row."""


def news_values(item: NewsItem, sentiment: float) -> dict[str, Any]:
    """A :data:`NEWS` row of ``item``.

    >>> item = NewsItem(id="a-1", feed="f", title="Bitcoin and Ether rally", link="", published=None, fetched=7)
    >>> row = news_values(item, 0.5)
    >>> row["fetched"], row["id"], row["published"], row["sentiment"], row["bases"]
    (7, 'a-1', None, 0.5, 'BTC,ETH')
    """
    return {
        "fetched": item.fetched,
        "id": item.id,
        "feed": item.feed,
        "title": item.title,
        "link": item.link,
        "published": item.published,
        "sentiment": sentiment,
        "bases": ",".join(sorted(mentioned_bases(item))),
    }


def feature_row_values(row: FeatureRow) -> dict[str, Any]:
    d: dict[str, Any] = {
        "window_start": row.window_start,
        "window_end": row.window_end,
        "venue": row.venue,
        "symbol": row.symbol,
        "feature_set": row.feature_set,
        "book_valid": row.book_valid,
        "epoch": row.epoch,
    }
    d.update(row.features)
    return d


def prediction_values(p: Prediction, quantiles: Sequence[float]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "issued_at": p.issued_at,
        "target_time": p.target_time,
        "venue": p.venue,
        "symbol": p.symbol,
        "model": p.model,
        "model_version": p.model_version,
        "horizon_steps": p.horizon_steps,
        "horizon_s": p.horizon_s,
        "value": p.value,
    }
    for q in quantiles:
        d[quantile_column(q)] = p.quantiles.get(str(q))
    return d


def score_values(s: Score) -> dict[str, Any]:
    return {
        "window_end": s.window_end,
        "venue": s.venue,
        "symbol": s.symbol,
        "model": s.model,
        "horizon_steps": s.horizon_steps,
        "n": s.n,
        "mae": s.mae,
        "rmse": s.rmse,
        "hit_rate": s.hit_rate,
        "pinball": s.pinball,
        "coverage": s.coverage,
        "skill": s.skill,
    }

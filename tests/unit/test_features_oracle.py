"""Online features == a pandas batch computation over the same windows of a real capture.

The oracle rebuilds the book with a plain dict (no shared code with ccf.book), takes the top of book after the last
book event strictly before each window end (``merge_asof``), aggregates trades by window with ``groupby``, and
recomputes OFI (at the touch and at levels 2-5), returns, volatility, trade-flow imbalance, queue depletion and the
scaled inputs with vectorised pandas. Real headlines (the shared CoinDesk feed) are spread
over the capture by fetched time: ``news_count`` and ``news_sentiment`` against a ``groupby`` over VADER called
directly.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ccf.capture.readers import read_records
from ccf.engine import EngineConfig, SymbolEngine
from ccf.features.bookkeeper import SyncedBook
from ccf.features.news import scored
from ccf.features.seed import SEED_SET, SEED_VWAP_DEPTH, seed_feature_names
from ccf.features.signals import DEPLETION_DEPTH, SIGNAL_FEATURES
from ccf.features.windows import WindowConfig, feature_names, row_names
from ccf.news.parse import parse_feed
from ccf.schemas import BookDelta, BookSnapshot, NewsItem, Trade

ROOT = Path(__file__).resolve().parents[2]
W = 1_000_000_000


@pytest.fixture
def data_dir(session_env: dict[str, str]) -> Path:
    return Path(session_env.get("CCF_DATA_DIR", ROOT.parent / "shared" / "data"))


def _engine_rows(records: list, window_ns: int, seed: bool = False) -> pd.DataFrame:
    cfg = EngineConfig(window=WindowConfig(width_ns=window_ns, lateness_ns=5 * W, seed=seed), models=())
    eng = SymbolEngine("binance", "ETH-USDT", SyncedBook("binance", "ETH-USDT"), cfg)
    rows = []
    for i in range(0, len(records), 777):  # arbitrary batch edges must not matter
        out = eng.on_batch(records[i : i + 777])
        assert not out.late and not out.problems
        rows += out.rows
    rows += eng.on_eof().rows
    return pd.DataFrame([{"window_start": r.window_start, "window_end": r.window_end, "book_valid": r.book_valid,
                          "feature_set": r.feature_set, **r.features} for r in rows])


def _with_news(records: list, feed: Path) -> tuple[list, list[NewsItem]]:
    """The feed's items fetched every 7 s from 30 s into the capture, each put before the first market record at or
    after its fetched time (as a merged source delivers them); every other one already scored, as the flow routes
    them, the rest bare (the engine scores those)."""
    items, status = parse_feed(feed.read_bytes(), "https://www.coindesk.com/arc/outboundfeeds/rss/", 0)
    assert status.ok and len(items) >= 40
    t0 = next(r.ts_event for r in records if isinstance(r, Trade)) + 30 * W
    news = [msgspec.structs.replace(item, fetched=t0 + i * 7 * W + 123) for i, item in enumerate(items)]
    out, k = [], 0
    for rec in records:
        while k < len(news) and not isinstance(rec, BookSnapshot) and rec.ts_event >= news[k].fetched:
            out.append(scored([news[k]])[0] if k % 2 else news[k])
            k += 1
        out.append(rec)
    assert k == len(news)  # all of them inside the capture
    return out, news


def _news_oracle(news: list[NewsItem], window_ns: int) -> pd.DataFrame:
    vader = SentimentIntensityAnalyzer()
    df = pd.DataFrame({"ts": [n.fetched for n in news],
                       "s": [vader.polarity_scores(f"{n.title} {n.summary}".strip())["compound"] for n in news]})
    df["window_end"] = df.ts - df.ts % window_ns + window_ns
    return df.groupby("window_end").agg(news_count=("s", "size"), news_sentiment=("s", "mean")).reset_index()


def _tops(records: list, deep: int = 0) -> pd.DataFrame:
    """The book after every book event, rebuilt with plain dicts: the best 10 levels as columns ``bp1, bs1, ap1,
    az1, ...`` (NaN price, size 0 where a side has fewer), their depth sums, and with ``deep`` the best ``deep``
    levels of each side as arrays (``bl``, ``al``)."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    pending: list[BookDelta] = []
    last_id = None
    tops = []
    for rec in records:
        if isinstance(rec, BookSnapshot):
            bids = {p: s for p, s in rec.bids if s > 0}
            asks = {p: s for p, s in rec.asks if s > 0}
            last_id = rec.last_update_id
            todo, pending = [d for d in pending if d.last_update_id > last_id], []
        elif isinstance(rec, BookDelta):
            if last_id is None:
                pending.append(rec)
                continue
            todo = [rec]
        else:
            continue
        for d in todo:
            for side, levels in ((bids, d.bids), (asks, d.asks)):
                for p, s in levels:
                    if s == 0:
                        side.pop(p, None)
                    else:
                        side[p] = s
            last_id = d.last_update_id
        tb = sorted(bids.items(), reverse=True)[: max(deep, 10)]
        ta = sorted(asks.items())[: max(deep, 10)]
        top = {"ts": rec.ts_event, "bp": tb[0][0], "bs": tb[0][1], "ap": ta[0][0], "as_": ta[0][1],
               **{f"db{n}": sum(s for _, s in tb[:n]) for n in (1, 5, 10)},
               **{f"da{n}": sum(s for _, s in ta[:n]) for n in (1, 5, 10)}}
        for m in range(10):
            top[f"bp{m + 1}"], top[f"bs{m + 1}"] = tb[m] if m < len(tb) else (np.nan, 0.0)
            top[f"ap{m + 1}"], top[f"az{m + 1}"] = ta[m] if m < len(ta) else (np.nan, 0.0)
        if deep:
            top["bl"], top["al"] = np.array(tb[:deep]), np.array(ta[:deep])
        tops.append(top)
    return pd.DataFrame(tops)


def _at_ends(book: pd.DataFrame, window_ns: int, first_start: int, last_end: int) -> pd.DataFrame:
    """The book after the last book event strictly before each window end."""
    ends = pd.DataFrame({"window_end": np.arange(first_start + window_ns, last_end + 1, window_ns, dtype=np.int64)})
    return pd.merge_asof(ends, book.rename(columns={"ts": "window_end"}).astype({"window_end": np.int64}),
                         on="window_end", allow_exact_matches=False)


def _level_flow(book: pd.DataFrame, m: int) -> pd.Series:
    """Cont et al.'s e at level ``m`` between consecutive books (a missing level: price NaN, size 0)."""
    prev = book.shift(1)
    bp, bs, pbp, pbs = book[f"bp{m}"], book[f"bs{m}"], prev[f"bp{m}"], prev[f"bs{m}"]
    ap, az, pap, paz = book[f"ap{m}"], book[f"az{m}"], prev[f"ap{m}"], prev[f"az{m}"]
    e_bid = np.select([bp > pbp, bp == pbp, bp < pbp], [bs, bs - pbs, -pbs], bs - pbs)
    e_ask = np.select([ap < pap, ap == pap, ap > pap], [az, az - paz, -paz], az - paz)
    e = pd.Series(e_bid - e_ask)
    e.iloc[0] = 0.0  # the first book is a reference only
    return e


def _depletion(at: pd.DataFrame, side: str) -> pd.Series:
    """``1 - size now at the previous window end's touch price / its size then``, looked up in the kept levels."""
    levels = at.bl if side == "bid" else at.al
    out = []
    for prev, now in itertools.pairwise([None, *levels]):
        if not isinstance(prev, np.ndarray) or not isinstance(now, np.ndarray):
            out.append(np.nan)
            continue
        p0, q0 = prev[0]
        sizes = dict(zip(now[:, 0], now[:, 1], strict=True))
        if p0 in sizes:
            out.append(1.0 - sizes[p0] / q0)
        elif now[:, 0].min() <= p0 <= now[:, 0].max() or (p0 > now[0, 0] if side == "bid" else p0 < now[0, 0]):
            out.append(1.0)  # an emptied level between two kept ones, or the touch moved through it
        else:
            out.append(np.nan)  # deeper than the kept levels
    return pd.Series(out)


def _signals(out: pd.DataFrame, book: pd.DataFrame, at: pd.DataFrame, tr: pd.DataFrame) -> pd.DataFrame:
    """The ``ccf.features.signals`` columns (and trade-flow imbalance) of the oracle's windows."""
    flows = pd.DataFrame({f"ofi_l{m}": _level_flow(book, m) for m in range(1, 6)})
    flows["window_end"] = book.window_end
    levels = flows.groupby("window_end").sum()
    out = out.merge(levels, on="window_end", how="left")
    out[list(levels.columns)] = out[list(levels.columns)].fillna(0.0)
    assert np.allclose(out.ofi_l1, out.ofi)  # level 1 is the touch OFI, computed two ways
    w = 1.0 / np.arange(1, 6)
    out["ofi_depth"] = sum((w[m - 1] / w.sum()) * out[f"ofi_l{m}"] for m in range(1, 6))
    for col, src in (("ofi_z", "ofi"), ("ofi_depth_z", "ofi_depth")):
        rms = np.sqrt((out[src] ** 2).rolling(20, min_periods=1).mean())
        out[col] = (out[src] / rms).where(rms > 0, 0.0)
    out["tfi_volume"] = ((2 * out.buy_volume - out.volume) / out.volume).where(out.volume > 0, 0.0)
    out["tfi_count"] = ((2 * out.buy_count - out.trade_count) / out.trade_count).where(out.trade_count > 0, 0.0)
    out["micro_dev_bps"] = (out.microprice - out.mid) / out.mid * 1e4
    for side, taker, size in (("bid", out.volume - out.buy_volume, at.bs1), ("ask", out.buy_volume, at.az1)):
        out[f"{side}_depletion"] = _depletion(at, side).to_numpy()
        start = size.shift(1).where(at.bp1.notna() & at.bp1.shift(1).notna())
        out[f"{side}_consumed"] = (taker / start.to_numpy()).to_numpy()
    return out


def _oracle(records: list, window_ns: int, first_start: int, last_end: int) -> pd.DataFrame:
    book = _tops(records, deep=DEPLETION_DEPTH)
    at = _at_ends(book, window_ns, first_start, last_end)
    out = pd.DataFrame({"window_end": at.window_end})
    out["best_bid"], out["best_ask"] = at.bp, at.ap
    out["mid"] = (at.bp + at.ap) / 2
    out["spread"] = at.ap - at.bp
    out["microprice"] = (at.bp * at.as_ + at.ap * at.bs) / (at.bs + at.as_)
    for n in (1, 5, 10):
        out[f"depth_bid_{n}"], out[f"depth_ask_{n}"] = at[f"db{n}"], at[f"da{n}"]
        out[f"imbalance_{n}"] = (at[f"db{n}"] - at[f"da{n}"]) / (at[f"db{n}"] + at[f"da{n}"])
    # OFI (Cont et al.) from consecutive tops, summed over the window of the later event
    prev = book.shift(1)
    e_bid = np.where(book.bp > prev.bp, book.bs, np.where(book.bp == prev.bp, book.bs - prev.bs, -prev.bs))
    e_ask = np.where(book.ap < prev.ap, book.as_, np.where(book.ap == prev.ap, book.as_ - prev.as_, -prev.as_))
    book["e"] = pd.Series(e_bid - e_ask).fillna(0.0)
    book["window_end"] = book.ts - book.ts % window_ns + window_ns
    out = out.merge(book.groupby("window_end").e.sum().rename("ofi"), on="window_end", how="left")
    out["ofi"] = out.ofi.fillna(0.0)
    # trades in [start, end)
    tr = pd.DataFrame([{"ts": t.ts_event, "p": t.price, "q": t.size, "buy": t.side == "buy"}
                       for t in records if isinstance(t, Trade)])
    tr["window_end"] = tr.ts - tr.ts % window_ns + window_ns
    tr["notional"] = tr.p * tr.q
    tr["bq"] = tr.q.where(tr.buy, 0.0)
    tr["bn"] = tr.buy.astype(float)
    g = tr.groupby("window_end").agg(trade_count=("q", "size"), volume=("q", "sum"), notional=("notional", "sum"),
                                     buy_volume=("bq", "sum"), buy_count=("bn", "sum"))
    out = out.merge(g, on="window_end", how="left")
    sums = ["trade_count", "volume", "notional", "buy_volume", "buy_count"]
    out[sums] = out[sums].fillna(0.0)
    out["vwap"] = out.notional / out.volume.where(out.volume > 0)
    out["signed_volume"] = 2 * out.buy_volume - out.volume
    out = _signals(out, book, at, tr)
    news = [r for r in records if isinstance(r, NewsItem)]
    out = out.merge(_news_oracle(news, window_ns), on="window_end", how="left")
    out["news_count"] = out.news_count.fillna(0.0)  # news_sentiment stays NaN in windows without news
    return out


@pytest.mark.parametrize("window_s", [1, 3])
def test_online_features_equal_pandas_batch_on_real_ethusdt(data_dir: Path, window_s: int) -> None:
    d = data_dir / "hftbacktest_binance_raw_ws"
    market = list(read_records([d / "spot_ethusdt_20240808.gz", d / "spot_ethusdt_20240809.gz"]))
    records, news = _with_news(market, data_dir / "rss_feeds" / "crypto_news" / "coindesk_rss_2023-03-13.xml")
    w = window_s * W
    online = _engine_rows(records, w)
    # one row per window, contiguous, no duplicates
    assert online.window_start.is_unique
    assert (online.window_start.diff().dropna() == w).all()
    valid = online[online.book_valid | online["mid"].notna()].reset_index(drop=True)  # whole at the end
    assert len(valid) >= 640 // window_s - 2
    oracle = _oracle(market + news, w, int(online.window_start.iloc[0]), int(online.window_end.iloc[-1]))
    merged = valid.merge(oracle, on="window_end", suffixes=("", "_oracle"))
    assert len(merged) == len(valid)
    # returns and volatility run over the valid windows (contiguous from the first one)
    merged["mid_logret_oracle"] = np.log(merged.mid_oracle / merged.mid_oracle.shift(1))
    merged["realized_vol_oracle"] = np.sqrt((merged.mid_logret_oracle**2).rolling(20, min_periods=1).mean())
    z = merged.mid_logret_oracle / merged.realized_vol_oracle
    merged["ret_z_oracle"] = z.where(merged.realized_vol_oracle > 0, 0.0)
    oracle["mid_logret"] = oracle["realized_vol"] = oracle["ret_z"] = np.nan
    checked = [c for c in oracle.columns if c != "window_end" and c in feature_names()]
    assert len(checked) >= 20 and set(SIGNAL_FEATURES) <= set(checked)
    for col in checked:
        got, want = merged[col].to_numpy(float), merged[f"{col}_oracle"].to_numpy(float)
        if col in ("mid_logret", "realized_vol", "ret_z"):  # the first valid window has no previous mid in either
            got, want = got[1:], want[1:]
        both_nan = np.isnan(got) & np.isnan(want)
        close = np.isclose(got, want, rtol=1e-9, atol=1e-9) | both_nan
        assert close.all(), f"{col}: first mismatch at {np.argmin(close)}: {got[~close][:3]} vs {want[~close][:3]}"
    # the capture moves: these features are not trivially constant
    assert merged.trade_count.sum() > 10_000 and merged.ofi.abs().sum() > 0 and merged.mid.nunique() > 50
    assert all(merged[f"ofi_l{m}"].abs().sum() > 0 for m in range(2, 6)) and merged.tfi_volume.abs().sum() > 0
    for col in ("bid_depletion", "ask_depletion", "bid_consumed", "ask_consumed"):  # defined in most windows
        assert merged[col].notna().mean() > 0.8 and merged[col].nunique() > 20, col
    assert math.isfinite(merged.realized_vol.iloc[-1])
    # every headline counted once, in a window of its own fetched time; sentiments of both signs
    assert "news_sentiment" in checked and online.news_count.sum() == len(news) == merged.news_count.sum()
    with_news = merged[merged.news_count > 0]
    assert with_news.news_sentiment.notna().all() and merged[merged.news_count == 0].news_sentiment.isna().all()
    assert (with_news.news_sentiment > 0.05).any() and (with_news.news_sentiment < -0.05).any()


def _vwap_oracle(levels: object, q: float) -> float:
    """Average price of ``q`` units from ``levels`` (an array of price, size rows), by cumulative sums."""
    if not isinstance(levels, np.ndarray):
        return np.nan
    cum = np.cumsum(levels[:, 1])
    k = int(np.searchsorted(cum, q))  # the first level at which q is filled
    if k == len(cum):
        return np.nan
    before = cum[k - 1] if k else 0.0
    return float((levels[:k, 0] @ levels[:k, 1] + (q - before) * levels[k, 0]) / q)


def test_seed_features_equal_pandas_batch_on_real_ethusdt(data_dir: Path) -> None:
    market = list(read_records([data_dir / "hftbacktest_binance_raw_ws" / "spot_ethusdt_20240808.gz"]))
    w = 3 * W
    online = _engine_rows(market, w, seed=True)
    assert (online.feature_set == SEED_SET).all()
    assert set(row_names(WindowConfig(seed=True))) <= set(online.columns)
    valid = online[online["mid"].notna()].reset_index(drop=True)
    assert len(valid) >= 100
    at = _at_ends(_tops(market, deep=SEED_VWAP_DEPTH), w, int(online.window_start.iloc[0]),
                  int(online.window_end.iloc[-1]))
    o = pd.DataFrame({"window_end": at.window_end})
    mid = (at.bp1 + at.ap1) / 2
    totals: dict[str, list[pd.Series]] = {}
    for side, p, s in (("bid", "bp", "bs"), ("ask", "ap", "az")):
        total_size = sum(at[f"{s}{i}"] for i in range(1, 6))
        for i in range(1, 6):
            price, size = at[f"{p}{i}"], at[f"{s}{i}"]
            for part, x in (("price", price), ("size", size), ("value", price * size)):
                o[f"lr_{side}_{part}_{i}"] = np.log(x / x.shift(1))
                totals.setdefault(f"{side}_{part}", []).append(x)
            o[f"rel_{side}_price_{i}"] = (price - mid) / mid * 1e4
            o[f"rel_{side}_size_{i}"] = size / total_size
    for key, parts in totals.items():
        x = sum(parts)
        o[f"lr_{key}_sum"] = np.log(x / x.shift(1))
    for q in (1.0, 10.0, 50.0):
        o[f"vwap_buy_{q:g}"] = [_vwap_oracle(a, q) for a in at.al]
        o[f"vwap_sell_{q:g}"] = [_vwap_oracle(b, q) for b in at.bl]
    merged = valid.merge(o, on="window_end", suffixes=("", "_oracle"))
    assert len(merged) == len(valid)
    for span in (5, 10, 20):
        merged[f"mid_ema_{span}_oracle"] = merged["mid"].ewm(span=span, adjust=False).mean()
    checked = seed_feature_names()
    for col in checked:
        got, want = merged[col].to_numpy(float), merged[f"{col}_oracle"].to_numpy(float)
        close = np.isclose(got, want, rtol=1e-9, atol=1e-12) | (np.isnan(got) & np.isnan(want))
        assert close.all(), f"{col}: first mismatch at {np.argmin(close)}: {got[~close][:3]} vs {want[~close][:3]}"
    # the seed columns move: deltas of both signs, VWAPs that walk more than the touch
    assert (merged.lr_bid_size_1 > 0).any() and (merged.lr_bid_size_1 < 0).any()
    assert merged.lr_ask_price_1.abs().sum() > 0 and merged.vwap_buy_50.notna().mean() > 0.9
    assert (merged.vwap_buy_50 >= merged.best_ask).all() and (merged.vwap_sell_50 <= merged.best_bid).all()
    assert (merged.vwap_buy_50 > merged.vwap_buy_1).mean() > 0.5

"""The synthetic market: deterministic, resumable, a sane book, the documented predictable component, and statistics
near a real BTCUSDT/ETHUSDT capture."""

from __future__ import annotations

import math
import pickle
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccf.schemas import BookDelta, BookSnapshot, BookTop, MarketRecord, Trade, format_decimal
from ccf.synthetic import DEFAULT_START_NS, DEFAULT_STEP_NS, SymbolSpec, SyntheticVenue, imbalance

SYMBOLS = ["BTC-USDT", "ETH-USDT"]


def test_same_seed_same_records_other_seed_other_records() -> None:
    a = SyntheticVenue(SYMBOLS, seed=11).next_batch(5000)
    b = SyntheticVenue(SYMBOLS, seed=11).next_batch(5000)
    c = SyntheticVenue(SYMBOLS, seed=12).next_batch(5000)
    assert a == b
    assert a != c
    assert len(a) == 5000


def test_adding_a_symbol_leaves_the_others_unchanged() -> None:
    alone = SyntheticVenue(["ETH-USDT"], seed=3).next_batch(3000)
    together = SyntheticVenue(["SOL-USDT", "ETH-USDT", "BTC-USDT"], seed=3).next_batch(30000)
    eth = [r for r in together if r.symbol == "ETH-USDT"]
    assert len(eth) >= len(alone)
    assert eth[: len(alone)] == alone


@pytest.mark.parametrize("cut", [1, 2, 777, 4000])
def test_resume_from_state_continues_exactly(cut: int) -> None:
    straight = SyntheticVenue(SYMBOLS, seed=5)
    expected = straight.next_batch(cut) + straight.next_batch(6000)
    first = SyntheticVenue(SYMBOLS, seed=5)
    head = first.next_batch(cut)
    resumed = SyntheticVenue.from_state(first.state())
    assert head + resumed.next_batch(6000) == expected
    repickled = pickle.loads(pickle.dumps(first))
    assert repickled.next_batch(6000) == expected[cut:]


def test_from_state_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        SyntheticVenue.from_state(pickle.dumps({"not": "a venue"}))


def _decimals(x: float) -> int:
    return len(format_decimal(x).partition(".")[2])


def _replay(records: list[MarketRecord], ticks: dict[str, float], levels: int) -> dict[str, int]:
    """Replays the records into books and checks every step: never crossed, always ``levels`` per side, a one-tick
    spread, ids contiguous, only existing levels removed, the venue's own top equals the book's, prices on each
    symbol's tick grid, sizes on its lot grid, and every trade on a level of the book it traded against (at the
    touch, or deeper in a sweep) and no larger than it. Returns counts by kind."""
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    last_id: dict[str, int] = {}
    last_ts: dict[str, int] = {}
    counts = {"trade": 0, "delta": 0, "top": 0, "deep_trade": 0}
    for rec in records:
        assert rec.ts_event >= last_ts.get(rec.symbol, 0)
        last_ts[rec.symbol] = rec.ts_event
        tick = ticks[rec.symbol]
        if isinstance(rec, BookSnapshot):
            assert rec.ts_event == DEFAULT_START_NS
            books[rec.symbol] = (dict(rec.bids), dict(rec.asks))
            last_id[rec.symbol] = rec.last_update_id
            assert len(rec.bids) == len(rec.asks) == levels
            assert round((rec.asks[0][0] - rec.bids[0][0]) / tick) == 1
        elif isinstance(rec, Trade):
            counts["trade"] += 1
            bids, asks = books[rec.symbol]  # the book before this step's delta
            if rec.side == "buy":
                assert rec.price in asks and rec.size <= asks[rec.price]
                counts["deep_trade"] += rec.price > min(asks)
            else:
                assert rec.price in bids and rec.size <= bids[rec.price]
                counts["deep_trade"] += rec.price < max(bids)
            assert rec.size > 0
            assert _decimals(rec.size) <= 3
            assert rec.ts_event % DEFAULT_STEP_NS != 0  # inside the step, before its delta
        elif isinstance(rec, BookDelta):
            counts["delta"] += 1
            assert rec.ts_event % DEFAULT_STEP_NS == 0
            assert rec.first_update_id == last_id[rec.symbol] + 1
            assert rec.last_update_id - rec.first_update_id + 1 == len(rec.bids) + len(rec.asks)
            last_id[rec.symbol] = rec.last_update_id
            bids, asks = books[rec.symbol]
            for side, levels_ in ((bids, rec.bids), (asks, rec.asks)):
                for price, size in levels_:
                    assert _decimals(price) <= _decimals(tick)
                    assert size >= 0
                    if size == 0:
                        del side[price]  # only levels that exist are removed
                    else:
                        side[price] = size
            assert len(bids) == len(asks) == levels
            assert max(bids) < min(asks)
            assert round((min(asks) - max(bids)) / tick) == 1  # one tick
        elif isinstance(rec, BookTop):
            counts["top"] += 1
            bids, asks = books[rec.symbol]
            best_bid, best_ask = max(bids), min(asks)
            assert (rec.bid_price, rec.bid_size, rec.ask_price, rec.ask_size) == (
                best_bid,
                bids[best_bid],
                best_ask,
                asks[best_ask],
            )
            assert rec.update_id == last_id[rec.symbol]
    return counts


def test_book_is_sane_and_ids_contiguous() -> None:
    levels = 12
    venue = SyntheticVenue(SYMBOLS, seed=9, levels=levels)
    ticks = {s: venue.specs[s].tick for s in SYMBOLS}
    assert ticks == {"BTC-USDT": 0.1, "ETH-USDT": 0.01}
    records = venue.next_batch(60_000)
    assert [type(r) for r in records[:2]] == [BookSnapshot, BookSnapshot]
    counts = _replay(records, ticks, levels)
    assert counts["delta"] - counts["top"] in (0, 1)  # the batch may end between a delta and its top
    assert counts["top"] > 5_000
    assert counts["trade"] > 20_000
    assert counts["deep_trade"] > 1_000  # sweeps walk the book


@settings(deadline=None, max_examples=40)  # shared machines: time is not what is tested here
@given(
    levels=st.integers(2, 20),
    move_prob=st.floats(0.0, 0.9),
    clustering=st.floats(0.0, 0.95),
    jump_bps=st.floats(0.0, 20.0),
    gap=st.floats(1.0, 8.0),
    seed=st.integers(0, 2**32),
)
def test_the_book_stays_sane_for_any_parameters(
    levels: int, move_prob: float, clustering: float, jump_bps: float, gap: float, seed: int
) -> None:
    """Jumps far beyond the book, contiguous or sparse ladders, two levels, a market that moves every step."""
    spec = SymbolSpec(price=64000.0, tick=0.1, lot=0.001, size=1.0, deep=0.2, trade=0.05, gap=gap, jump_bps=jump_bps)
    venue = SyntheticVenue(
        ["X-USDT"], seed, levels=levels, move_prob=move_prob, clustering=clustering, specs={"X-USDT": spec}
    )
    _replay(venue.next_batch(3000), {"X-USDT": 0.1}, levels)


def test_snapshot_matches_the_book_after_deltas() -> None:
    venue = SyntheticVenue(["ETH-USDT"], seed=2)
    records = venue.next_batch(3001)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for rec in records:
        if isinstance(rec, BookSnapshot):
            bids, asks = dict(rec.bids), dict(rec.asks)
        elif isinstance(rec, BookDelta):
            for side, levels in ((bids, rec.bids), (asks, rec.asks)):
                for price, size in levels:
                    side.pop(price, None) if size == 0 else side.__setitem__(price, size)
    while not isinstance(records[-1], BookTop):  # finish the step so the snapshot is at a step boundary
        records.append(venue.next_batch(1)[0])
        if isinstance(records[-1], BookDelta):
            rec = records[-1]
            for side, levels in ((bids, rec.bids), (asks, rec.asks)):
                for price, size in levels:
                    side.pop(price, None) if size == 0 else side.__setitem__(price, size)
    snap = venue.snapshot("ETH-USDT")
    assert dict(snap.bids) == bids
    assert dict(snap.asks) == asks
    assert [p for p, _ in snap.bids] == sorted(bids, reverse=True)
    assert [p for p, _ in snap.asks] == sorted(asks)
    assert snap.last_update_id == records[-1].update_id


def test_end_ns_stops_the_venue() -> None:
    venue = SyntheticVenue(["ETH-USDT"], seed=1, end_ns=DEFAULT_START_NS + 10 * DEFAULT_STEP_NS)
    out: list[MarketRecord] = []
    while not venue.finished:
        batch = venue.next_batch(7)
        assert batch
        out.extend(batch)
    assert venue.next_batch(7) == []
    assert sum(isinstance(r, BookDelta) for r in out) == 10
    assert max(r.ts_event for r in out) == DEFAULT_START_NS + 10 * DEFAULT_STEP_NS


def _imbalance_regression(alpha: float, seed: int, seconds: int = 6000) -> tuple[float, float]:
    """OLS of the next 1 s mid log-return on the top-of-book imbalance at the end of this second: (slope, t)."""
    venue = SyntheticVenue(["ETH-USDT"], seed=seed, alpha=alpha)
    steps_per_s = 1_000_000_000 // DEFAULT_STEP_NS
    mids, imbs = [], []
    for _ in range(seconds):
        last = None
        for _ in range(steps_per_s):
            for rec in venue.step():
                if isinstance(rec, BookTop):
                    last = rec
        assert last is not None
        mids.append((last.bid_price + last.ask_price) / 2)
        imbs.append(imbalance(last))
    y = np.diff(np.log(np.array(mids)))
    x = np.array(imbs)[:-1]
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    sigma2 = resid @ resid / (len(y) - 2)
    se = math.sqrt(sigma2 * np.linalg.inv(design.T @ design)[1, 1])
    return float(coef[1]), float(coef[1] / se)


@pytest.mark.parametrize("seed", [1, 2])
def test_imbalance_leads_the_next_second_with_alpha(seed: int) -> None:
    slope, t = _imbalance_regression(alpha=0.8, seed=seed)
    assert slope > 0
    assert t > 4, f"imbalance should predict the next-second return (t={t:.2f})"


@pytest.mark.parametrize("seed", [1, 2])
def test_no_predictability_without_alpha(seed: int) -> None:
    _, t = _imbalance_regression(alpha=0.0, seed=seed)
    assert abs(t) < 3, f"alpha=0 must be a random walk (t={t:.2f})"


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        SyntheticVenue(["ETH-USDT", "ETH-USDT"])
    with pytest.raises(ValueError, match="alpha"):
        SyntheticVenue(["ETH-USDT"], alpha=1.5)
    with pytest.raises(ValueError, match="clustering"):
        SyntheticVenue(["ETH-USDT"], clustering=1.0)


def _seconds(symbol: str, seed: int, seconds: int = 3000, clustering: float | None = None) -> dict[str, np.ndarray]:
    """One row per simulated second, from the book top at its end: mid, spread (bp), touch sizes, trades."""
    venue = SyntheticVenue([symbol], seed=seed)  # the defaults
    if clustering is not None:
        venue = SyntheticVenue([symbol], seed=seed, clustering=clustering)
    steps_per_s = 1_000_000_000 // DEFAULT_STEP_NS
    rows = []
    for _ in range(seconds):
        trades, top = 0, None
        for _ in range(steps_per_s):
            for rec in venue.step():
                if isinstance(rec, Trade):
                    trades += 1
                elif isinstance(rec, BookTop):
                    top = rec
        assert top is not None
        mid = (top.bid_price + top.ask_price) / 2
        rows.append((mid, (top.ask_price - top.bid_price) / mid * 1e4, top.bid_size, top.ask_size, trades))
    cols = np.array(rows).T
    return dict(zip(("mid", "spread_bps", "bid_size", "ask_size", "trades"), cols, strict=True))


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(x[:-lag] @ x[lag:] / (x @ x))


# Real Binance USD-M BTCUSDT / ETHUSDT, 2024-07-18/19 (ccf/synthetic.py docstring): std of 1 s mid log-returns (bp),
# share of seconds without a mid change, median spread (bp), trades per second, median size at the touch, and the
# autocorrelation of |returns| at lags 1 and 2.
class Real(NamedTuple):
    std: float
    zero: float
    spread: float
    trades: float
    touch: float
    acf: tuple[float, float]


REAL = {
    "BTC-USDT": Real(std=0.47, zero=0.76, spread=0.0156, trades=22.3, touch=12.0, acf=(0.26, 0.18)),
    "ETH-USDT": Real(std=0.58, zero=0.74, spread=0.0292, trades=28.4, touch=75.0, acf=(0.19, 0.20)),
}


@pytest.mark.parametrize(("symbol", "seed"), [("BTC-USDT", 1), ("BTC-USDT", 2), ("ETH-USDT", 3)])
def test_default_market_looks_like_the_real_capture(symbol: str, seed: int) -> None:
    """The default market within bands around the documented real statistics (50 minutes of simulated time)."""
    real, s = REAL[symbol], _seconds(symbol, seed)
    r = np.diff(np.log(s["mid"])) * 1e4
    touch = np.concatenate([s["bid_size"], s["ask_size"]])
    assert 0.6 * real.std < r.std() < 1.5 * real.std, r.std()
    assert real.zero - 0.12 < np.mean(r == 0) < real.zero + 0.12, np.mean(r == 0)
    assert np.median(s["spread_bps"]) == pytest.approx(real.spread, rel=0.05)
    assert 0.5 * real.trades < s["trades"].mean() < 2 * real.trades, s["trades"].mean()
    assert np.median(s["trades"]) < s["trades"].mean() / 1.5  # bursty, as real trade counts are
    assert 0.5 * real.touch < np.median(touch) < 2 * real.touch, np.median(touch)
    absr = np.abs(r - r.mean())
    acf = [_acf(absr, lag) for lag in (1, 2)]
    assert all(0.08 < a < 0.5 for a in acf), acf  # volatility clusters, as in the capture (0.26, 0.18 for BTC)
    assert abs(_acf(r, 1)) < 0.08  # but the direction does not persist


def test_without_clustering_moves_are_independent() -> None:
    """clustering=0 keeps the mean rates and removes the |return| autocorrelation: clustering is what makes it."""
    s = _seconds("BTC-USDT", 4, clustering=0.0)
    r = np.diff(np.log(s["mid"])) * 1e4
    absr = np.abs(r - r.mean())
    assert all(abs(_acf(absr, lag)) < 0.06 for lag in (1, 2, 3))
    assert 0.6 * REAL["BTC-USDT"].std < r.std() < 1.5 * REAL["BTC-USDT"].std
    assert 0.5 * REAL["BTC-USDT"].trades < s["trades"].mean() < 2 * REAL["BTC-USDT"].trades

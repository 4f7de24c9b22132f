"""The synthetic market: deterministic, resumable, a sane book, and the documented predictable component."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from ccf.schemas import BookDelta, BookSnapshot, BookTop, MarketRecord, Trade, format_decimal
from ccf.synthetic import DEFAULT_START_NS, DEFAULT_STEP_NS, SyntheticVenue, imbalance

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


def test_book_is_sane_and_ids_contiguous() -> None:
    """Replays the records into books: never crossed, always ``levels`` per side, a one-tick spread, ids
    contiguous, the venue's own top equals the book's, prices on each symbol's tick grid, sizes on its lot grid,
    and every trade on a level of the book it traded against: at the touch, or deeper in a sweep."""
    levels = 12
    venue = SyntheticVenue(SYMBOLS, seed=9, levels=levels)
    ticks = {s: venue.specs[s].tick for s in SYMBOLS}
    assert ticks == {"BTC-USDT": 0.1, "ETH-USDT": 0.01}
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    last_id: dict[str, int] = {}
    last_ts: dict[str, int] = {}
    counts = {"trade": 0, "delta": 0, "top": 0, "deep_trade": 0}
    records = venue.next_batch(60_000)
    assert [type(r) for r in records[:2]] == [BookSnapshot, BookSnapshot]
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
    assert counts["delta"] - counts["top"] in (0, 1)  # the batch may end between a delta and its top
    assert counts["top"] > 5_000
    assert counts["trade"] > 20_000
    assert counts["deep_trade"] > 1_000  # sweeps walk the book


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


def _imbalance_regression(alpha: float, seed: int, seconds: int = 2000) -> tuple[float, float]:
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

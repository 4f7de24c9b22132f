"""The window engine's rules on hand-made events: boundaries, lateness, empty windows, resyncs, pickling."""

from __future__ import annotations

import math
import pickle

import pytest

from ccf.engine import EngineConfig, SymbolEngine
from ccf.features.bookkeeper import SyncedBook
from ccf.features.news import news_sentiment
from ccf.features.ofi import MultiLevelOFI, OrderFlowImbalance
from ccf.features.returns import RealizedVol
from ccf.features.seed import SeedFeatures
from ccf.features.signals import Signals
from ccf.features.trades import TradeFlow
from ccf.features.windows import SymbolWindows, WindowConfig
from ccf.forecast.baselines import SymbolForecaster
from ccf.forecast.scoring import Scorer
from ccf.schemas import BookDelta, BookSnapshot, Trade

S = 1_000_000_000
T0 = 1_700_000_000 * S


def snap(ts: int, uid: int = 10) -> BookSnapshot:
    return BookSnapshot("binance", "ETH-USDT", ts, ts, ((100.0, 1.0), (99.0, 2.0)), ((101.0, 1.0), (102.0, 2.0)),
                        last_update_id=uid)


def delta(ts: int, uid: int, bids=(), asks=()) -> BookDelta:
    return BookDelta("binance", "ETH-USDT", ts, ts, tuple(bids), tuple(asks), first_update_id=uid, last_update_id=uid)


def trade(ts: int, price: float = 100.5, size: float = 1.0, side: str = "buy") -> Trade:
    return Trade("binance", "ETH-USDT", ts, ts, price, size, side, str(ts))  # type: ignore[arg-type]


def windows(lateness_s: float = 0.0, seed: bool = False) -> SymbolWindows:
    cfg = WindowConfig(width_ns=S, lateness_ns=int(lateness_s * S), seed=seed)
    return SymbolWindows("binance", "ETH-USDT", SyncedBook("binance", "ETH-USDT"), cfg)


def test_book_features_use_the_book_before_the_window_end() -> None:
    w = windows()
    rows, _ = w.process([snap(T0 + S // 10), delta(T0 + S // 2, 11, bids=[(100.5, 3.0)])])
    assert rows == []
    # an event exactly at the window end belongs to the next window: the row shows the book before it
    rows, _ = w.process([delta(T0 + S, 12, bids=[(100.7, 1.0)])])
    assert len(rows) == 1
    r = rows[0]
    assert (r.window_start, r.window_end) == (T0, T0 + S)
    assert r.book_valid and r.features["best_bid"] == 100.5 and r.features["best_bid_size"] == 3.0
    assert r.features["mid"] == (100.5 + 101.0) / 2


def test_trades_in_half_open_windows_and_late_trades_are_routed() -> None:
    w = windows(lateness_s=0.5)
    w.process([snap(T0), trade(T0 + 100), trade(T0 + S - 1, size=2.0, side="sell")])
    rows, late = w.process([trade(T0 + S, size=5.0), trade(T0 + S + S // 2 + 1)])  # watermark passes T0 + S
    assert [r.window_start for r in rows] == [T0]
    f = rows[0].features
    assert f["trade_count"] == 2 and f["volume"] == 3.0 and f["signed_volume"] == -1.0
    assert late == []
    rows, late = w.process([trade(T0 + 5)])  # its window closed: late, counted, handed back, not dropped
    assert late and late[0].ts_event == T0 + 5 and w.late_trades == 1
    rows = w.flush()
    assert rows[0].features["trade_count"] == 2 and rows[0].features["late_trades"] == 1.0


def test_every_window_gets_a_row_and_empty_ones_say_so() -> None:
    w = windows()
    rows, _ = w.process([snap(T0), trade(T0 + 1), trade(T0 + 4 * S + 1)])
    assert [r.window_start for r in rows] == [T0, T0 + S, T0 + 2 * S, T0 + 3 * S]
    assert [r.features["carried"] for r in rows] == [0.0, 1.0, 1.0, 1.0]
    assert all(r.features["trade_count"] == 0 for r in rows[1:])
    assert all(r.features["mid"] == rows[0].features["mid"] for r in rows)  # book carried forward
    assert all(math.isnan(r.features["vwap"]) for r in rows[1:])


def test_gap_invalidates_until_resync_and_bumps_epoch() -> None:
    w = windows()
    problems: list[object] = []
    w.process([snap(T0), delta(T0 + 1, 11, bids=[(100.2, 1.0)]), delta(T0 + 2, 13)], lambda p, ts: problems.append(p))
    assert len(problems) == 1 and "gap" in str(problems[0])
    rows, _ = w.process([trade(T0 + S + 1)])
    assert not rows[0].book_valid and rows[0].epoch == 1 and math.isnan(rows[0].features["mid"])
    rows, _ = w.process([snap(T0 + S + 2, uid=20), delta(T0 + 2 * S + 1, 21)])
    assert rows[0].book_valid and rows[0].epoch == 1 and rows[0].features["mid"] == 100.5


def test_crossed_book_is_an_error_never_a_feature() -> None:
    w = windows()
    problems: list[object] = []
    w.process([snap(T0), delta(T0 + 1, 11, bids=[(101.5, 1.0)])], lambda p, ts: problems.append(p))
    assert type(problems[0]).__name__ == "CrossedBookError"
    rows = w.flush()
    assert not rows[0].book_valid and math.isnan(rows[0].features["spread"])


def news_waiting() -> SymbolWindows:
    """Windows holding a news item (and its score) that came before the first market record."""
    from ccf.schemas import NewsItem

    w = windows()
    w.process([(NewsItem(id="n", feed="f", title="BTC", link="", published=None, fetched=T0), 0.5)])
    assert w.waiting_news
    return w


def seeded() -> SymbolWindows:
    """Seed-set windows with a closed window behind them (its levels and EMAs kept)."""
    w = windows(seed=True)
    rows, _ = w.process([snap(T0), delta(T0 + S // 2, 11, bids=[(100.0, 3.0)]), delta(T0 + S, 12, asks=[(101.0, 2.0)])])
    assert rows and rows[0].feature_set == "seed.v1" and rows[0].features["rel_bid_size_1"] == 3.0 / 5.0
    return w


@pytest.mark.parametrize(
    "state",
    [
        OrderFlowImbalance().update(1.0, 2.0, 3.0, 4.0),
        RealizedVol(5).update(0.1),
        TradeFlow().update(1.0, 2.0, "buy"),
        MultiLevelOFI().update([(1.0, 2.0)], [(3.0, 4.0)]).update([(1.0, 3.0)], [(3.0, 4.0)]),
        Signals(),
        SeedFeatures(),
        seeded(),
        Scorer("v", "s"),
        SymbolForecaster("v", "s"),
        windows(),
        news_waiting(),
        SymbolEngine("binance", "ETH-USDT", SyncedBook("binance", "ETH-USDT"), EngineConfig()),
    ],
    ids=lambda s: type(s).__name__,
)
def test_every_state_class_pickles(state: object) -> None:
    clone = pickle.loads(pickle.dumps(state))
    assert type(clone) is type(state)
    if not isinstance(state, (SymbolForecaster, SymbolEngine)):  # River models re-pickle in another byte order
        assert pickle.dumps(clone) == pickle.dumps(state)
    assert type(pickle.loads(pickle.dumps(clone))) is type(state)


def test_engine_resumes_from_a_pickle_exactly() -> None:
    recs = [snap(T0)] + [x for i in range(1, 40) for x in (delta(T0 + i * S // 4, 10 + i, bids=[(100.0, 1.0 + i)]),
                                                             trade(T0 + i * S // 4 + 1, side="sell" if i % 3 else "buy"))]
    a = SymbolEngine("binance", "ETH-USDT", SyncedBook("binance", "ETH-USDT"), EngineConfig(horizons=(1, 2)))
    first = a.on_batch(recs[:30])
    b = pickle.loads(pickle.dumps(a))
    assert a.on_batch(recs[30:]).rows == b.on_batch(recs[30:]).rows
    assert first.rows and first.predictions


def test_news_counts_by_fetched_time_and_never_moves_the_watermark() -> None:
    from ccf.schemas import NewsItem

    w = windows()
    far = NewsItem(id="x", feed="f", title="BTC", link="", published=None, fetched=T0 + 3600 * S)
    near = NewsItem(id="y", feed="f", title="BTC", link="", published=T0 + 10 * S, fetched=T0 + S // 2)
    old = NewsItem(id="z", feed="f", title="BTC", link="", published=None, fetched=T0 - S)
    rows, late = w.process([near, old, snap(T0), (near, 0.5), trade(T0 + 1), far, (near, -0.25)])
    assert rows == []  # a news item from our clock's future closed nothing
    # before the first market event news wait for it: then counted in their window, or late when older (not dropped)
    assert late == [old]
    rows, _ = w.process([trade(T0 + 2 * S)])
    assert [r.features["news_count"] for r in rows] == [3.0, 0.0]
    mean = (news_sentiment(near) + 0.5 - 0.25) / 3  # a bare item is scored here; a pair brings its score
    assert math.isclose(rows[0].features["news_sentiment"], mean) and math.isnan(rows[1].features["news_sentiment"])


def test_a_clock_jump_restarts_windows_instead_of_filling_them() -> None:
    w = windows()
    problems: list[object] = []
    rows, _ = w.process([snap(T0), trade(T0 + 1), trade(T0 + 2 * S)], lambda p, ts: problems.append(p))
    year = 365 * 24 * 3600 * S
    rows2, _ = w.process([trade(T0 + year), trade(T0 + year + 3 * S)], lambda p, ts: problems.append(p))
    starts = [r.window_start for r in rows + rows2]
    assert starts == [T0, T0 + S, T0 + 2 * S, T0 + year, T0 + year + S, T0 + year + 2 * S]
    assert len(problems) == 1 and "jumped" in str(problems[0])


def test_a_snapshot_stamped_with_our_clock_does_not_move_the_windows() -> None:
    w = windows()
    later = BookSnapshot("binance", "ETH-USDT", T0 + 10**6 * S, T0 + 10**6 * S, ((100.0, 1.0),), ((101.0, 1.0),),
                         last_update_id=10)
    rows, _ = w.process([delta(T0, 9), later, delta(T0 + S // 2, 11), trade(T0 + S + 1)])
    assert [r.window_start for r in rows] == [T0]
    # the book at the window's end is whole, but update 9 of this window came before it was: flow is partial
    assert not rows[0].book_valid and rows[0].features["mid"] == 100.5


def test_other_models_predictions_are_scored_by_the_same_scorer() -> None:
    from ccf.schemas import Prediction

    eng = SymbolEngine("binance", "ETH-USDT", SyncedBook("binance", "ETH-USDT"), EngineConfig(horizons=(1,)))
    eng.on_batch([snap(T0), delta(T0 + 1, 11)])
    tft = Prediction("tft", "3", "binance", "ETH-USDT", 1, 1.0, T0 + S, T0 + 2 * S, 0.001, {"0.1": -0.01, "0.9": 0.01})
    mine = Prediction("naive", "x", "binance", "ETH-USDT", 1, 1.0, T0 + S, T0 + 2 * S, 0.5)
    eng.on_batch([tft, mine, trade(T0 + S + 1), delta(T0 + S + 2, 12, bids=[(100.7, 1.0)]), trade(T0 + 3 * S)])
    m = eng.scorer.metrics[("tft", 1)]
    assert m.n == 1 and m.cover_n == 1
    assert eng.scorer.metrics[("naive", 1)].abs_sum < 0.5  # the stray "naive" from outside was not scored


def test_a_gap_found_by_the_first_update_past_a_window_end_flags_that_window() -> None:
    """The updates lost before the one that shows the gap may be of the window it is the first past: that window
    keeps its book features (the book at its end) but says ``book_valid = False``; the window before it does not."""
    w = windows()
    first, _ = w.process([snap(T0 + S // 10), delta(T0 + S // 2, 11), delta(T0 + S + S // 2, 12)])
    rows, _ = w.process([delta(T0 + 2 * S + S // 10, 14)])  # 13 was lost, somewhere in (T0 + 1.5 s, T0 + 2.1 s)
    rows = first + rows
    assert [(r.window_start, r.book_valid) for r in rows] == [(T0, True), (T0 + S, False)]
    assert rows[1].features["best_bid"] == 100.0  # the book at its end, as far as it is known
    rows = w.flush()
    assert [(r.window_start, r.book_valid) for r in rows] == [(T0 + 2 * S, False)]


def test_ofi_after_a_snapshot_is_measured_from_the_snapshots_top() -> None:
    w = windows()
    w.process([delta(T0 + S // 10, 9), snap(T0 + S // 5, uid=10), delta(T0 + S // 2, 11, bids=[(100.0, 4.0)])])
    (row,) = w.flush()
    assert row.features["ofi"] == 3.0  # best bid size 1 -> 4 at the same price


def test_seed_settings_mean_3_s_windows_unless_set() -> None:
    from ccf.settings import Settings

    seed = Settings(_env_prefix="CCF_TEST_NONE_", features={"feature_set": "seed"})
    cfg = EngineConfig.from_settings(seed).window
    assert cfg.seed and cfg.width_ns == 3 * S
    explicit = Settings(_env_prefix="CCF_TEST_NONE_", features={"feature_set": "seed", "window_s": 1.0})
    assert EngineConfig.from_settings(explicit).window.width_ns == S
    book = EngineConfig.from_settings(Settings(_env_prefix="CCF_TEST_NONE_")).window
    assert not book.seed and book.width_ns == S


def test_multi_level_ofi_of_a_level_that_appears_and_vanishes() -> None:
    m = MultiLevelOFI(2).update([(100.0, 1.0)], [(101.0, 1.0)])
    m.update([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)])  # a second bid level appears: +2 at level 2
    assert m.get() == [0.0, 2.0]
    m.update([(100.0, 1.0)], [(101.0, 1.0), (102.0, 4.0)])  # it goes (-2), a second ask appears (-4)
    assert m.get() == [0.0, -4.0]

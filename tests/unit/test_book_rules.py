"""Optional sync-rule parts: a snapshot that carries on the sequence is no resync (Bybit ``orderbook.1``)."""

from __future__ import annotations

from ccf.book import SNAPSHOT, SymbolBook
from ccf.capture.replay import book_replay
from ccf.schemas import BookSnapshot
from ccf.venues.bybit import BybitRule
from tests.datafiles import data_file


def _snap(u: int, bid: float = 1.0) -> BookSnapshot:
    return BookSnapshot("bybit", "X-USDT", u, u, ((bid, 1.0),), ((bid + 1, 1.0),), last_update_id=u)


def test_snapshots_that_carry_on_keep_the_epoch_and_a_restart_bumps_it() -> None:
    sb = SymbolBook("bybit", "X-USDT", BybitRule())
    assert [sb.on_snapshot(_snap(u)) for u in (10, 11, 11, 15)] == [SNAPSHOT] * 4
    assert (sb.valid, sb.epoch) == (True, 0)
    sb.on_snapshot(_snap(1))  # u == 1: Bybit restarted its service, a real resync
    assert (sb.valid, sb.epoch, sb.book.best_bid()) == (True, 1, (1.0, 1.0))
    sb.on_snapshot(_snap(0, 2.0))  # going back in the sequence is a resync too
    assert sb.epoch == 2


def test_orderbook_1_capture_never_counts_a_resync() -> None:
    rows = list(book_replay([data_file("cryptofeed_sample_data/bybit_v5_2025/BYBIT.ws.1.0.gz")]))
    by_symbol: dict[str, list[object]] = {}
    for r in rows:
        by_symbol.setdefault(r.symbol, []).append(r)
    assert len(by_symbol) >= 4
    for symbol, srows in by_symbol.items():
        assert len(srows) > 10, symbol
        assert {r.epoch for r in srows} == {0}, symbol  # was 44 on BAND-USDT-PERP and 106 on SNT-USDT-PERP
        assert all(r.book_valid for r in srows[1:]), symbol

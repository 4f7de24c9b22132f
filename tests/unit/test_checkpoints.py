"""Checkpoints on ``ccf.book``: a consumer that starts in the middle of the topic has the venue's book from the
first checkpoint on, and a book in sync is untouched by them. On the real spot and USD-M captures."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ccf.book import APPLIED, SNAPSHOT, STALE, SymbolBook
from ccf.capture.readers import read_records
from ccf.ingest.book_sync import BookSync
from ccf.schemas import BookDelta, BookSnapshot
from ccf.venues.registry import new_rule
from tests.datafiles import data_file

HFT = "hftbacktest_binance_raw_ws/"
CAPTURES = {"spot": [HFT + "spot_ethusdt_20240808.gz", HFT + "spot_ethusdt_20240809.gz"],
            "usdm": [HFT + "usdm_btcusdt_20240718.gz", HFT + "usdm_btcusdt_20240719.gz"]}
EVERY_NS = 30 * 10**9


def _published(files: list[str]) -> list[tuple[Any, Any]]:
    """The book records in the order the ingest flow publishes them, checkpoints included, each with the top 10
    of ingest's own book right after it."""
    sync, out, health = None, [], []
    for rec in read_records([data_file(f) for f in files]):
        if not isinstance(rec, BookDelta | BookSnapshot):
            continue
        if sync is None:
            sync = BookSync(rec.venue, "c", checkpoint_ns=EVERY_NS)
        sb = sync.book(rec.symbol)
        if isinstance(rec, BookDelta):
            event = sync.on_delta(rec, None, health)
            out.append((rec, _top(sb)))
            checkpoint = sync.checkpoint(rec) if event is APPLIED else None
            if checkpoint is not None:
                out.append((checkpoint, _top(sb)))
        else:
            sync.on_snapshot(rec, None, health)
            out.append((rec, _top(sb)))
    return out


def _top(sb: SymbolBook) -> Any:
    return (sb.book.top_bids(10), sb.book.top_asks(10)) if sb.valid else None


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def published(request: pytest.FixtureRequest) -> list[tuple[Any, Any]]:
    return _published(CAPTURES[request.param])


def test_checkpoints_are_published_at_the_interval_at_the_time_of_their_update(
    published: list[tuple[Any, Any]],
) -> None:
    checkpoints = [(i, r) for i, (r, _) in enumerate(published) if isinstance(r, BookSnapshot) and r.checkpoint]
    assert len(checkpoints) >= 10
    for i, cp in checkpoints:
        before = published[i - 1][0]
        assert isinstance(before, BookDelta) and cp.last_update_id == before.last_update_id
        assert cp.ts_event == before.ts_event and cp.ts_recv == before.ts_recv
        assert (list(cp.bids[:10]), list(cp.asks[:10])) == published[i][1]
    gaps = [b.ts_event - a.ts_event for (_, a), (_, b) in itertools.pairwise(checkpoints)]
    assert min(gaps) >= EVERY_NS


def test_a_book_in_sync_ignores_checkpoints(published: list[tuple[Any, Any]]) -> None:
    first = published[0][0]
    with_cp, without = (SymbolBook(first.venue, first.symbol, new_rule(first.venue)) for _ in range(2))
    for rec, _ in published:
        if isinstance(rec, BookSnapshot) and rec.checkpoint:
            assert with_cp.on_snapshot(rec) is STALE
            continue
        on = with_cp.on_delta if isinstance(rec, BookDelta) else with_cp.on_snapshot
        other = without.on_delta if isinstance(rec, BookDelta) else without.on_snapshot
        assert on(rec) is other(rec)  # type: ignore[arg-type]
        assert (with_cp.epoch, with_cp.book) == (without.epoch, without.book)


@pytest.mark.parametrize("start_at", [0.3, 0.55, 0.8])
def test_a_late_joiner_has_the_venues_book_from_its_first_checkpoint(
    published: list[tuple[Any, Any]], start_at: float
) -> None:
    k = int(len(published) * start_at)
    first = published[k][0]
    late = SymbolBook(first.venue, first.symbol, new_rule(first.venue))
    synced_at = None
    compared = 0
    for i, (rec, top) in enumerate(published[k:], start=k):
        event = late.on_delta(rec) if isinstance(rec, BookDelta) else late.on_snapshot(rec)
        if synced_at is None:
            if event is SNAPSHOT:
                assert isinstance(rec, BookSnapshot) and rec.checkpoint, "synced by a checkpoint"
                synced_at = i
            continue
        assert _top(late) == top, f"record {i}: the late joiner's book differs"
        compared += 1
    assert synced_at is not None and compared > 1000
    first_cp = next(i for i, (r, _) in enumerate(published[k:], start=k) if isinstance(r, BookSnapshot))
    assert synced_at == first_cp

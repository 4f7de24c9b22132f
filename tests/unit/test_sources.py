"""In-process sources: keyed chunks, stop-after in event time, resume by count, dead letters; Kafka decoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from bytewax.testing import TestingSink, run_main

from ccf.errors import ParseError
from ccf.kafka_source import decode_messages
from ccf.schemas import Trade, encode
from ccf.sources import DLQ_KEY, RecordSource, chunk_by_key, record_key_str

S = 1_000_000_000


def trades(n: int, symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT")) -> list[Trade]:
    return [Trade("binance", symbols[i % len(symbols)], i * S // 10, i * S // 10, 100.0 + i, 1.0, "buy", str(i))
            for i in range(n)]


def _run(source: RecordSource) -> list[tuple[str, list[object]]]:
    out: list[tuple[str, list[object]]] = []
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow

    flow = Dataflow("t")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)
    return out


def test_chunks_keep_each_keys_order_and_route_errors_apart() -> None:
    recs = [*trades(5), ParseError("bad", venue="binance", symbol="BTC-USDT")]
    chunks = dict(chunk_by_key(recs))
    assert [t.trade_id for t in chunks["binance:BTC-USDT"]] == ["0", "2", "4"]  # type: ignore[attr-defined]
    assert [t.trade_id for t in chunks["binance:ETH-USDT"]] == ["1", "3"]  # type: ignore[attr-defined]
    assert len(chunks[DLQ_KEY]) == 1
    assert record_key_str((recs[0], object())) == "binance:BTC-USDT"
    assert record_key_str(SimpleNamespace(fetched=1, title="x")) == "news:ALL"


def test_source_emits_batches_and_stops_after_event_time() -> None:
    out = _run(RecordSource({"p": lambda: iter(trades(200))}, batch_size=50, stop_after_s=10.0))
    got = [r for _, chunk in out for r in chunk]
    assert len(got) == 100  # 10 s of event time at 10 records per second
    assert max(r.ts_event for r in got) < 10 * S  # type: ignore[attr-defined]
    assert len(out) <= 2 * (100 // 50) + 2  # one item per key per batch, not one per record


def test_resume_skips_exactly_what_was_emitted() -> None:
    src = RecordSource({"p": lambda: iter(trades(30))}, batch_size=7)
    part = src.build_part("s", "p", None)
    first = [r for _, c in part.next_batch() for r in c]
    state = part.snapshot()
    assert state == 7
    resumed = src.build_part("s", "p", state)
    rest: list[object] = []
    while True:
        try:
            rest += [r for _, c in resumed.next_batch() for r in c]
        except StopIteration:
            break
    ids = sorted(int(r.trade_id) for r in first + rest)  # type: ignore[attr-defined]
    assert ids == list(range(30))


def test_kafka_messages_decode_and_bad_ones_become_dead_letters() -> None:
    good = trades(3)
    msgs = [SimpleNamespace(value=encode(t), key=b"binance:" + t.symbol.encode(), topic="ccf.trades", partition=0,
                            offset=i) for i, t in enumerate(good)]
    msgs.append(SimpleNamespace(value=b"{broken", key=b"binance:BTC-USDT", topic="ccf.trades", partition=0, offset=9))
    msgs.append(SimpleNamespace(value=None, err="broker down"))
    chunks = dict(decode_messages(msgs))
    assert chunks["binance:BTC-USDT"] == [good[0], good[2]]
    dead = chunks[DLQ_KEY]
    assert len(dead) == 2
    assert dead[0].venue == "binance" and dead[0].symbol == "BTC-USDT" and dead[0].raw == b"{broken"
    assert "ccf.trades[0]@9" in dead[0].reason and "broker down" in dead[1].reason


def test_paced_source_keeps_real_time_from_the_first_record_and_warns_when_it_falls_behind(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import time

    from ccf import sources

    # real time: 2 s of event time (trades every 0.1 s) take 2 s of wall time, the first record included
    started = time.monotonic()
    out = _run(RecordSource({"p": lambda: iter(trades(21))}, batch_size=2000, pace=1.0))
    assert sum(len(c) for _, c in out) == 21
    assert 1.9 <= time.monotonic() - started < 4.0  # 2 s of schedule; the upper bound only catches a stuck source

    # asked for far more than a per-record batch can give: a warning names the source and the speed it reached
    monkeypatch.setattr(sources, "BEHIND_CHECK_S", 0.01)
    caplog.set_level("WARNING", logger="ccf.sources")
    _run(RecordSource({"p": lambda: iter(trades(20000))}, batch_size=1, pace=1e6))
    behind = [r.getMessage() for r in caplog.records if "falls behind" in r.getMessage()]
    assert behind and "partition p falls behind: running at" in behind[0] and "where 1e+06x was asked" in behind[0]

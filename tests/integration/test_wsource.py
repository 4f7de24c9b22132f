"""The resilient websocket source against the local venue server: reconnects, watchdog, named failure, Bytewax.

Local only (loopback, no Kafka). Every wait is bounded.
"""

from __future__ import annotations

import gzip
import itertools
import random
import socket
import time
from collections.abc import Callable

import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.testing import TestingSink, run_main

from ccf.errors import ConnectionFailedError
from ccf.schemas import BookDelta
from ccf.venue_server.runner import ServerThread
from ccf.venues.binance import parse_message
from ccf.wsource import (
    Frame,
    HealthEvent,
    WsClient,
    WsConfig,
    WsConnection,
    WsItem,
    WsPartition,
    WsResume,
    WsSource,
    backoff_delay,
    fetch_rest_sync,
)
from tests.datafiles import data_file
from tests.venue_fixtures import venue_server, venue_server_factory  # noqa: F401

ETH = ["ethusdt@depth@100ms", "ethusdt@trade", "ethusdt@bookTicker"]
SUBSCRIBE = orjson.dumps({"method": "SUBSCRIBE", "params": ETH, "id": 1}).decode()
FAST = WsConfig(backoff_initial_s=0.05, backoff_max_s=0.2, silence_timeout_s=2.0, max_tries=5, open_timeout_s=2)


def pump(client: WsClient, until: Callable[[list[WsItem]], bool], timeout_s: float = 8.0) -> list[WsItem]:
    """Drain the client until ``until(items)`` holds (or fail after ``timeout_s``)."""
    items: list[WsItem] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items += client.drain()
        if until(items):
            return items
        time.sleep(0.01)
    kinds = [i.kind for i in items if isinstance(i, HealthEvent)]
    raise AssertionError(f"condition not met in {timeout_s} s; {len(items)} items, health {kinds}")


def frames(items: list[WsItem], session: int | None = None) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame) and not i.url and (session is None or i.session == session)]


def drive(part: WsPartition, items: list[WsItem], timeout_s: float = 5.0) -> None:
    """Call ``next_batch`` like Bytewax does until it raises (the test expects it to), collecting into ``items``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items += part.next_batch()
        time.sleep(0.005)
    raise AssertionError(f"next_batch did not raise in {timeout_s} s")


def health(items: list[WsItem]) -> list[str]:
    return [i.kind for i in items if isinstance(i, HealthEvent)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_frames_rest_snapshot_and_health(venue_server: ServerThread) -> None:  # noqa: F811
    rest = f"{venue_server.base_url}/api/v3/depth?symbol=ETHUSDT&limit=1000"
    conn = WsConnection("eth", venue_server.stream_url(ETH), rest_urls=(rest,))
    client = WsClient(conn, FAST).start()
    try:
        items = pump(client, lambda xs: len(frames(xs)) >= 500 and "subscribed" in health(xs))
    finally:
        client.stop()
    assert health(items)[:3] == ["connecting", "connected", "subscribed"]
    snap = [i for i in items if isinstance(i, Frame) and i.url == rest]
    assert len(snap) == 1
    assert orjson.loads(snap[0].data)["lastUpdateId"] > 0
    got = frames(items)
    assert all(f.conn == "eth" and f.session == 1 for f in got)
    assert all(a.ts_recv <= b.ts_recv for a, b in itertools.pairwise(got))
    assert all(parse_message(f.data, f.ts_recv) is not None for f in got)


def test_dropped_diff_shows_as_a_sequence_gap(venue_server: ServerThread) -> None:  # noqa: F811
    client = WsClient(WsConnection("eth", venue_server.stream_url(ETH, faults=["drop_diff@30"])), FAST).start()
    try:
        items = pump(client, lambda xs: len(frames(xs)) >= 300)
    finally:
        client.stop()
    deltas = [r for r in (parse_message(f.data, f.ts_recv) for f in frames(items)) if isinstance(r, BookDelta)]
    gaps = [b for a, b in itertools.pairwise(deltas) if b.first_update_id != a.last_update_id + 1]
    assert len(gaps) == 1


def test_reconnects_and_resubscribes_after_disconnect(venue_server: ServerThread) -> None:  # noqa: F811
    # no streams in the URL: data flows only if the client re-sends SUBSCRIBE on the new connection
    url = f"{venue_server.ws_url}/stream?fault=disconnect@40"
    client = WsClient(WsConnection("eth", url, subscribe=(SUBSCRIBE,)), FAST).start()
    try:
        items = pump(client, lambda xs: len(frames(xs, session=2)) >= 20)
    finally:
        client.stop()
    kinds = health(items)
    assert kinds.index("disconnected") < kinds.index("backoff") < len(kinds)
    first, second = frames(items, 1), frames(items, 2)
    assert first[0].data == '{"result":null,"id":1}'
    assert second[0].data == '{"result":null,"id":1}'
    assert len(first) == 41  # the ack and 40 messages, then the drop
    assert any('"depthUpdate"' in str(f.data) for f in second)
    backoffs = [i for i in items if isinstance(i, HealthEvent) and i.kind == "backoff"]
    assert backoffs[0].attempt == 1  # the backoff was reset by the good subscribe


def test_silence_watchdog_reconnects_a_stalled_connection(venue_server: ServerThread) -> None:  # noqa: F811
    url = venue_server.stream_url(ETH, faults=["stall:5@20"])
    config = WsConfig(backoff_initial_s=0.05, backoff_max_s=0.1, silence_timeout_s=0.3, max_tries=5)
    client = WsClient(WsConnection("eth", url), config).start()
    t0 = time.monotonic()
    try:
        items = pump(client, lambda xs: len(frames(xs, session=2)) >= 20)
    finally:
        client.stop()
    assert time.monotonic() - t0 < 4  # well before the 5 s stall ends
    assert "stalled" in health(items)
    assert len(frames(items, 1)) == 20


def test_proactive_reconnect_before_max_age(venue_server: ServerThread) -> None:  # noqa: F811
    config = WsConfig(backoff_initial_s=5.0, max_age_s=0.4, silence_timeout_s=2.0)
    client = WsClient(WsConnection("eth", venue_server.stream_url(ETH)), config).start()
    try:
        items = pump(client, lambda xs: len(frames(xs, session=2)) >= 10)
    finally:
        client.stop()
    kinds = health(items)
    assert "max_age" in kinds
    assert "backoff" not in kinds


def test_named_error_after_max_tries_when_the_server_is_down() -> None:
    config = WsConfig(backoff_initial_s=0.01, backoff_max_s=0.02, max_tries=3, open_timeout_s=1)
    part = WsPartition(WsConnection("dead", f"ws://127.0.0.1:{free_port()}/stream"), config, None)
    items: list[WsItem] = []
    try:
        with pytest.raises(ConnectionFailedError, match="3 consecutive failed tries"):
            drive(part, items)
    finally:
        part.close()
    assert health(items).count("connecting") == 3
    assert health(items)[-1] == "failed"


def test_resume_state_counts_frames(venue_server: ServerThread) -> None:  # noqa: F811
    config = WsConfig(max_frames=150)
    part = WsPartition(WsConnection("eth", venue_server.stream_url(ETH)), config, WsResume(frames=100, sessions=4))
    items: list[WsItem] = []
    try:
        with pytest.raises(StopIteration):
            drive(part, items)
        assert part.snapshot() == WsResume(frames=150, sessions=5)
    finally:
        part.close()
    assert len(frames(items)) == 50
    assert {f.session for f in frames(items)} == {5}


def test_rest_helper_retries_and_names_the_failure(venue_server: ServerThread) -> None:  # noqa: F811
    ts, body = fetch_rest_sync(f"{venue_server.base_url}/api/v3/depth?symbol=BTCUSDT&limit=10")
    assert ts > 0
    assert len(orjson.loads(body)["bids"]) == 10
    with pytest.raises(ConnectionFailedError, match=r"HTTP 400.*not retried"):
        fetch_rest_sync(f"{venue_server.base_url}/api/v3/depth?symbol=NOPE")
    with pytest.raises(ConnectionFailedError, match="failed 2 times"):
        fetch_rest_sync(f"http://127.0.0.1:{free_port()}/x", tries=2, backoff_initial_s=0.01)


def test_backoff_is_capped_jittered_and_grows() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(n, 0.5, 8.0, rng) for n in range(1, 12)]
    assert all(0.25 <= d <= 0.5 for d in delays[:1])
    assert all(4.0 <= d <= 8.0 for d in delays[5:])
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jittered


class _RecordingSource(WsSource):
    """Records the size of every non-empty batch the partitions hand to Bytewax."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sizes: list[int] = []

    def build_part(self, step_id: str, for_part: str, resume_state: WsResume | None) -> WsPartition:
        part = super().build_part(step_id, for_part, resume_state)
        inner = part.next_batch

        def next_batch() -> list[WsItem]:
            items = inner()
            if items:
                self.sizes.append(len(items))
            return items

        part.next_batch = next_batch  # type: ignore[method-assign]
        return part


def test_bytewax_run_ends_after_max_frames_in_real_batches(venue_server: ServerThread) -> None:  # noqa: F811
    conns = [
        WsConnection("eth", venue_server.stream_url(ETH)),
        WsConnection("btc", venue_server.stream_url(["btcusdt@depth@100ms", "btcusdt@trade"])),
    ]
    source = _RecordingSource(conns, WsConfig(max_frames=3000))
    out: list[WsItem] = []
    flow = Dataflow("wsource_test")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    got = frames(out)
    assert len(got) == 6000
    assert {f.conn for f in got} == {"eth", "btc"}
    assert health(out).count("ended") == 2
    assert sum(source.sizes) / len(source.sizes) > 1.5, f"batches: {source.sizes[:20]}"


def test_bytewax_run_of_a_replay_ends_with_the_capture(
    venue_server_factory: Callable[..., ServerThread],  # noqa: F811
) -> None:
    path = data_file("hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        streamed = [t for t in (line.rstrip("\n").partition(" ")[2] for line in fh) if t.startswith('{"stream"')]
    server = venue_server_factory(mode="replay", files=(path,))
    source = _RecordingSource([WsConnection("eth", server.stream_url(ETH))], WsConfig(stop_on_end_of_data=True))
    out: list[WsItem] = []
    flow = Dataflow("wsource_replay")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    assert [f.data for f in frames(out)] == streamed
    assert health(out)[-1] == "ended"
    assert sum(source.sizes) / len(source.sizes) > 10


def test_bytewax_run_surfaces_connection_failed() -> None:
    config = WsConfig(backoff_initial_s=0.01, backoff_max_s=0.02, max_tries=2, open_timeout_s=1)
    source = WsSource([WsConnection("dead", f"ws://127.0.0.1:{free_port()}/stream")], config)
    flow = Dataflow("wsource_dead")
    op.output("out", op.input("in", flow, source), TestingSink([]))
    with pytest.raises(BytewaxRuntimeError, match="next_batch") as info:
        run_main(flow)  # type: ignore[no-untyped-call]
    assert isinstance(info.value.__cause__, ConnectionFailedError)
    assert "2 consecutive failed tries" in str(info.value.__cause__)

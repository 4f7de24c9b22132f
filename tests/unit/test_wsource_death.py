"""A websocket worker that dies is noticed, logged once, restarted like a reconnect, and fails loudly after N deaths.

Against the local venue server (loopback websockets, no Kafka). The deaths are real exceptions raised inside the
client's own thread, by subclasses of :class:`ccf.wsource.WsClient` (no websocket library is mocked): the queue
the worker appends every frame to raises (as a bug in frame handling would), a session helper (REST snapshots,
watchdog) raises, or the thread just ends (gone without an exception or an end). Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import aiohttp
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.testing import TestingSink, run_main
from websockets.asyncio.client import ClientConnection

from ccf.errors import ConnectionFailedError, WorkerDiedError
from ccf.ingest.links import make_link
from ccf.ingest.source import IngestBatch, IngestConfig, IngestPartition
from ccf.settings import VenueSettings
from ccf.venue_server.runner import ServerThread
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
    fetch_rest_sync,
)
from tests.venue_fixtures import venue_server, venue_server_factory  # noqa: F401

ETH = ["ethusdt@depth@100ms", "ethusdt@trade", "ethusdt@bookTicker"]
FAST = WsConfig(backoff_initial_s=0.01, backoff_max_s=0.05, silence_timeout_s=2.0, max_tries=5, open_timeout_s=2,
                max_restarts=2)


@pytest.fixture(autouse=True)
def _no_gc_while_threads_format_tracebacks() -> Iterator[None]:
    """These tests log tracebacks from worker threads, and on CPython 3.11 before 3.11.8 a traceback's caret lines
    call ``ast.parse``, whose recursion depth lives in state every thread shares (CPython gh-106905): a garbage
    collection inside one thread's parse can hand the GIL to another thread that parses too, and a later parse
    raises ``SystemError: AST constructor recursion depth mismatch``. No collection while workers run, then one
    collection once they are stopped."""
    if sys.version_info >= (3, 11, 8):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


class _Bomb(deque[WsItem]):
    """The worker's queue, raising ``TypeError`` when the worker appends the n-th frame (counted over all sessions)."""

    def __init__(self, at: Callable[[int], bool]) -> None:
        super().__init__()
        self.at = at
        self.seen = 0

    def append(self, item: WsItem) -> None:
        if isinstance(item, Frame) and not item.url:
            self.seen += 1
            if self.at(self.seen):
                raise TypeError(f"bug on frame {self.seen}")
        super().append(item)


class BombOnThird(WsClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out = _Bomb(lambda n: n == 3)


class BombAlways(WsClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out = _Bomb(lambda n: True)


class RestBugOnce(WsClient):
    """The first session's REST/subscribe helper raises (a task: without the guard its exception would be lost)."""

    async def _after_subscribe(self, http: aiohttp.ClientSession, ws: ClientConnection) -> None:
        if self.session == 1:
            raise RuntimeError("helper bug")
        await super()._after_subscribe(http, ws)


class WatchdogBugOnce(WsClient):
    async def _watch(self, ws: ClientConnection, opened: float) -> None:
        if self.session == 1:
            raise KeyError("watchdog bug")
        await super()._watch(ws, opened)


class GoneOnce(WsClient):
    """The first thread just ends: no exception, no ``ended``/``failed``, no stop asked for."""

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.session == 0:
            self.session += 1
            loop.close()
            return
        super()._run(loop)


def partition(client: type[WsClient], url: str, config: WsConfig = FAST) -> WsPartition:
    part_type = type(f"{client.__name__}Partition", (WsPartition,), {"client_type": client})
    part: WsPartition = part_type(WsConnection("eth", url), config, None)
    return part


def pump(part: WsPartition, until: Callable[[list[WsItem]], bool], timeout_s: float = 8.0) -> list[WsItem]:
    """Call ``next_batch`` like Bytewax does until ``until(items)`` holds."""
    items: list[WsItem] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items += part.next_batch()
        if until(items):
            return items
        time.sleep(0.005)
    raise AssertionError(f"condition not met in {timeout_s} s; {len(items)} items, health {kinds(items)}")


def drive(part: WsPartition, items: list[WsItem], timeout_s: float = 8.0) -> None:
    """Call ``next_batch`` until it raises (the test expects it to), collecting into ``items``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items += part.next_batch()
        time.sleep(0.005)
    raise AssertionError(f"next_batch did not raise in {timeout_s} s")


def frames(items: Iterable[WsItem], session: int | None = None) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame) and not i.url and (session is None or i.session == session)]


def events(items: Iterable[WsItem], kind: str) -> list[HealthEvent]:
    return [i for i in items if isinstance(i, HealthEvent) and i.kind == kind]


def kinds(items: Iterable[WsItem]) -> list[str]:
    return [i.kind for i in items if isinstance(i, HealthEvent)]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ccf.wsource" and r.exc_info is not None]


def test_a_frame_handling_bug_kills_the_worker_once_and_it_reconnects(
    venue_server: ServerThread, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    part = partition(BombOnThird, venue_server.stream_url(ETH))
    try:
        items = pump(part, lambda xs: len(frames(xs, session=2)) >= 50)
    finally:
        part.close()
    assert [f.session for f in frames(items)][:3] == [1, 1, 2]  # the 3rd frame died with the worker (at most once)
    died = events(items, "worker_died")
    assert [(e.session, e.detail, e.attempt) for e in died] == [(1, "TypeError: bug on frame 3", 1)]
    k = kinds(items)
    assert k[k.index("worker_died"):][:4] == ["worker_died", "backoff", "connecting", "connected"]
    assert part.snapshot().sessions == 2
    assert [r.getMessage() for r in tracebacks(caplog)] == ["ws eth session 1: worker died"]
    assert "bug on frame 3" in caplog.text


@pytest.mark.parametrize("client", [RestBugOnce, WatchdogBugOnce])
def test_a_bug_in_a_session_helper_kills_the_worker_instead_of_vanishing(
    client: type[WsClient], venue_server: ServerThread, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    part = partition(client, venue_server.stream_url(ETH))
    try:
        items = pump(part, lambda xs: len(frames(xs, session=2)) >= 20)
    finally:
        part.close()
    died = events(items, "worker_died")
    assert len(died) == 1 and died[0].session == 1
    assert died[0].detail in ("RuntimeError: helper bug", "KeyError: 'watchdog bug'")
    assert len(tracebacks(caplog)) == 1


def test_a_worker_thread_gone_silently_is_noticed_and_restarted(
    venue_server: ServerThread, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    part = partition(GoneOnce, venue_server.stream_url(ETH))
    try:
        items = pump(part, lambda xs: len(frames(xs)) >= 20)
    finally:
        part.close()
    died = events(items, "worker_died")
    assert [(e.session, e.detail) for e in died] == [(1, "worker thread gone without an end")]
    assert {f.session for f in frames(items)} == {2}
    assert "worker thread gone without an end" in caplog.text


def test_a_worker_that_always_dies_fails_the_partition_after_max_restarts(
    venue_server: ServerThread, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    part = partition(BombAlways, venue_server.stream_url(ETH))
    items: list[WsItem] = []
    try:
        with pytest.raises(WorkerDiedError, match=r"eth .*died 3 times in a row.*\(2 restarts\).*TypeError: bug on frame") as info:
            drive(part, items)
    finally:
        part.close()
    assert isinstance(info.value, ConnectionFailedError)  # what callers of a connection already handle
    assert isinstance(info.value.__cause__, TypeError)
    assert [e.attempt for e in events(items, "worker_died")] == [1, 2, 3]
    assert [e.attempt for e in events(items, "backoff")] == [1, 2]
    assert kinds(items)[-1] == "failed"
    assert not frames(items)
    assert len(tracebacks(caplog)) == 3  # one per death, each once
    with pytest.raises(WorkerDiedError):  # and it stays failed
        part.next_batch()


def test_deaths_in_a_row_reset_after_a_frame_gets_through(venue_server: ServerThread) -> None:  # noqa: F811
    # every 3rd frame kills the worker: each life delivers two frames, so it is never "N deaths in a row"
    client_type = type("BombEveryThird", (WsClient,), {})

    def init(self: WsClient, *args: Any, **kwargs: Any) -> None:
        WsClient.__init__(self, *args, **kwargs)
        self._out = _Bomb(lambda n: n % 3 == 0)

    client_type.__init__ = init  # type: ignore[misc]
    part = partition(client_type, venue_server.stream_url(ETH))
    try:
        items = pump(part, lambda xs: len(events(xs, "worker_died")) >= 5)
    finally:
        part.close()
    assert [e.attempt for e in events(items, "worker_died")][:5] == [1] * 5
    assert len(frames(items)) >= 10


def test_a_worker_that_ends_or_is_stopped_is_no_death(venue_server: ServerThread) -> None:  # noqa: F811
    config = WsConfig(max_frames=40, max_restarts=0)
    part = WsPartition(WsConnection("eth", venue_server.stream_url(ETH)), config, WsResume())
    items: list[WsItem] = []
    try:
        with pytest.raises(StopIteration):
            drive(part, items)
    finally:
        part.close()
    assert len(frames(items)) == 40 and kinds(items)[-1] == "ended"
    assert "worker_died" not in kinds(items)

    client = WsClient(WsConnection("eth", venue_server.stream_url(ETH)), config).start()
    got: list[WsItem] = []
    deadline = time.monotonic() + 5
    while len(frames(got)) < 5 and time.monotonic() < deadline:
        got += client.drain()
        time.sleep(0.005)
    client.stop()
    time.sleep(0.05)
    got += client.drain() + client.drain()
    assert "worker_died" not in kinds(got) and client.restarts == 0 and client.failed is None


class _BombSource(WsSource):
    def build_part(self, step_id: str, for_part: str, resume_state: WsResume | None) -> WsPartition:
        return partition(BombAlways, self.connections[for_part].url, self.config)


def test_bytewax_run_stops_visibly_when_the_worker_keeps_dying(venue_server: ServerThread) -> None:  # noqa: F811
    source = _BombSource([WsConnection("eth", venue_server.stream_url(ETH))], FAST)
    out: list[WsItem] = []
    flow = Dataflow("wsource_worker_dies")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    with pytest.raises(BytewaxRuntimeError, match="next_batch") as info:
        run_main(flow)  # type: ignore[no-untyped-call]
    assert isinstance(info.value.__cause__, WorkerDiedError)
    assert isinstance(info.value.__cause__.__cause__, TypeError)
    assert kinds(out).count("worker_died") == 3


def test_ingest_partition_reports_the_death_and_resyncs_the_new_session(
    venue_server: ServerThread, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setattr(WsPartition, "client_type", BombOnThird)
    link = make_link("binance", ["ETH-USDT"], ["depth", "trade", "book_ticker"], ws_url=venue_server.ws_url,
                     rest_url=venue_server.base_url)
    config = IngestConfig(ws=FAST, fetch=partial(fetch_rest_sync, tries=2, timeout_s=5.0))
    part = IngestPartition(link, link.connections[0], config, None)
    batches: list[IngestBatch] = []
    deadline = time.monotonic() + 8
    try:
        while time.monotonic() < deadline:
            batches += part.next_batch()
            resynced = any(h["kind"] == "resync" and h["detail"] == "session 2" for b in batches for h in b.health)
            if resynced and sum(len(b.records) for b in batches) > 50:
                break
            time.sleep(0.005)
    finally:
        part.close()
    health = [h for b in batches for h in b.health]
    died = [h for h in health if h["kind"] == "worker_died"]
    assert len(died) == 1
    assert died[0]["venue"] == "binance" and died[0]["detail"] == "TypeError: bug on frame 3"
    assert died[0]["session"] == 1 and died[0]["attempt"] == 1
    resyncs = [h["detail"] for h in health if h["kind"] == "resync" and h["reason"] == "new_session"]
    assert resyncs[:2] == ["session 1", "session 2"]


def test_the_restart_limit_comes_from_the_venue_settings() -> None:
    assert WsConfig.from_settings(VenueSettings(max_worker_restarts=7)).max_restarts == 7
    assert WsConfig.from_settings(VenueSettings()).max_restarts == 5

"""The one resilient websocket source: a reconnecting client in a background thread, bridged into Bytewax.

Items (what the source emits, in receipt order per connection):

* :class:`Frame` ``(conn, session, ts_recv, data, url)``: one raw websocket message as received (``url == ""``), or
  the body of a REST request made for that session (``url`` set; e.g. Binance's depth snapshot, fetched after the
  first message of every session, so it lands among the diffs exactly like the snapshot line of an hftbacktest
  capture). ``ts_recv`` is :func:`time.time_ns` at receipt. ``session`` counts (re)connections: a new session means
  every book of that connection must be resynced.
* :class:`HealthEvent` ``(conn, session, ts, kind, detail, attempt)``: ``connecting``, ``connected``,
  ``subscribed`` (first message after subscribing, and REST snapshots fetched: backoff resets), ``disconnected``,
  ``stalled`` (silence watchdog fired), ``max_age`` (proactive reconnect), ``backoff`` (detail = delay), ``rest_failed``,
  ``failed`` and ``ended``. Route them with ``isinstance`` to a health stream.

Resilience: capped, jittered exponential backoff (``initial * 2**(n-1)`` capped at ``backoff_max_s``, then drawn
uniformly from its upper half) that resets after a good subscribe; a silence watchdog (no message for
``silence_timeout_s`` -> reconnect); resubscribe (``subscribe`` texts re-sent) on every connection; a reconnect,
without backoff, before ``max_age_s`` (Binance closes at 24 h); after ``max_tries`` consecutive failed tries,
:class:`ccf.errors.ConnectionFailedError` is raised from ``next_batch``. A server closing with code 1000 and reason
:data:`END_OF_DATA_REASON` (our replay server at the end of a capture) ends the source when ``stop_on_end_of_data``.

Bytewax: :class:`WsSource` is a ``FixedPartitionedSource``; parallelism unit = one connection (a partition), spread
over workers. ``next_batch`` never blocks and returns everything queued; when nothing is queued it asks to be woken
after ``poll_interval_s``. Delivery: at most once. A live feed cannot rewind, so the resume state only carries counts
(frames delivered, sessions), and whatever was in flight at a crash is lost: the book resyncs from a new snapshot.
The client thread starts when Bytewax builds the partition, never at import.

>>> [backoff_delay(n, 0.5, 30.0, random.Random(1)) <= min(30.0, 0.5 * 2 ** (n - 1)) for n in (1, 5, 20)]
[True, True, True]
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import aiohttp
import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ccf.backoff import backoff_delay as backoff_delay  # re-exported (ccf.ingest.fetcher imports it from here)
from ccf.errors import ConnectionFailedError
from ccf.settings import VenueSettings

logger = logging.getLogger(__name__)

END_OF_DATA_REASON: Final = "end of data"
"""Close reason (with code 1000) by which a server says its data has ended."""

HealthKind: TypeAlias = Literal[
    "connecting", "connected", "subscribed", "disconnected", "stalled", "max_age", "backoff", "rest_failed", "failed",
    "ended",
]  # fmt: skip


class Frame(msgspec.Struct, frozen=True, tag="frame"):
    """One raw message as received (``url == ""``) or one REST answer (``url`` = what was fetched)."""

    conn: str
    session: int
    ts_recv: int
    data: str | bytes
    url: str = ""


class HealthEvent(msgspec.Struct, frozen=True, tag="health"):
    """Something that happened to a connection (see the module docstring for the kinds)."""

    conn: str
    session: int
    ts: int
    kind: HealthKind
    detail: str = ""
    attempt: int = 0


WsItem: TypeAlias = Frame | HealthEvent


@dataclass(frozen=True)
class WsConnection:
    """One connection: where to connect, what to send after connecting, which REST bodies to fetch per session."""

    name: str
    url: str
    subscribe: tuple[str, ...] = ()
    rest_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class WsConfig:
    """Transport behaviour shared by all connections (see the module docstring)."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_tries: int = 10
    silence_timeout_s: float = 30.0
    max_age_s: float | None = 23.5 * 3600
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0
    rest_tries: int = 3
    rest_timeout_s: float = 10.0
    max_frames: int | None = None
    stop_on_end_of_data: bool = False
    health_events: bool = True
    poll_interval_s: float = 0.005
    use_env_proxy: bool = True

    @classmethod
    def from_settings(cls, venues: VenueSettings, **overrides: Any) -> WsConfig:
        base = cls(
            backoff_initial_s=venues.backoff_initial_s,
            backoff_max_s=venues.backoff_max_s,
            max_tries=venues.reconnect_max_tries,
            silence_timeout_s=venues.silence_timeout_s,
        )
        return replace(base, **overrides)


_RETRY_STATUS: Final = frozenset({418, 429, 500, 502, 503, 504})


async def fetch_rest(
    url: str,
    *,
    session: aiohttp.ClientSession | None = None,
    tries: int = 3,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 5.0,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    """GET ``url`` with retries; returns ``(ts_recv ns, body)``. Retries connection errors, timeouts, 5xx and rate
    limits (429/418, honouring ``Retry-After`` up to ``backoff_max_s``); raises :class:`ConnectionFailedError` after
    ``tries`` or at once on another 4xx."""
    own = session is None
    sess = session or aiohttp.ClientSession()
    rng = random.Random()
    try:
        for attempt in range(1, tries + 1):
            wait = backoff_delay(attempt, backoff_initial_s, backoff_max_s, rng)
            try:
                async with sess.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                    body = await resp.read()
                    ts = time.time_ns()
                    if resp.status == 200:
                        return ts, body
                    problem = f"HTTP {resp.status}: {body[:200]!r}"
                    if resp.status not in _RETRY_STATUS:
                        raise ConnectionFailedError(f"GET {url}: {problem} (not retried)")
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        wait = min(backoff_max_s, float(retry_after))
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            logger.warning("GET %s failed (try %d/%d): %s", url, attempt, tries, problem)
            if attempt < tries:
                await asyncio.sleep(wait)
        raise ConnectionFailedError(f"GET {url}: failed {tries} times, last: {problem}")
    finally:
        if own:
            await sess.close()


def fetch_rest_sync(url: str, **kwargs: Any) -> tuple[int, bytes]:
    """:func:`fetch_rest` for code outside an event loop."""
    return asyncio.run(fetch_rest(url, **kwargs))


class WsClient:
    """One connection, kept alive in a daemon thread with its own event loop; :meth:`drain` takes what arrived."""

    def __init__(self, conn: WsConnection, config: WsConfig, *, frames: int = 0, sessions: int = 0) -> None:
        self.conn = conn
        self.config = config
        self.frames = frames
        self.session = sessions
        self.failed: ConnectionFailedError | None = None
        self.done = False
        self._out: deque[WsItem] = deque()
        self._failures = 0
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._last_msg = 0.0
        self._why = ""

    def start(self) -> WsClient:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"ws-{self.conn.name}", daemon=True)
        self._thread.start()
        return self

    def drain(self) -> list[WsItem]:
        """Everything received since the last call (never blocks)."""
        out = self._out
        return [out.popleft() for _ in range(len(out))]

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(lambda: self._task.cancel() if self._task is not None else None)
        thread.join(timeout_s)

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._task = self._loop.create_task(self._main())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _health(self, kind: HealthKind, detail: str = "", attempt: int = 0) -> None:
        log = logger.warning if kind in ("disconnected", "stalled", "rest_failed", "failed") else logger.info
        log("ws %s session %d: %s %s", self.conn.name, self.session, kind, detail)
        if self.config.health_events:
            self._out.append(HealthEvent(self.conn.name, self.session, time.time_ns(), kind, detail, attempt))

    async def _main(self) -> None:
        cfg = self.config
        async with aiohttp.ClientSession() as http:
            while True:
                outcome = await self._session(http)
                if outcome == "end":
                    self._health("ended", f"after {self.frames} frames")
                    self.done = True
                    return
                if outcome == "rotate":
                    continue
                self._failures += 1
                if self._failures >= cfg.max_tries:
                    self.failed = ConnectionFailedError(
                        f"{self.conn.name} ({self.conn.url}): {self._failures} consecutive failed tries, last: {self._why}"
                    )
                    self._health("failed", str(self.failed), self._failures)
                    return
                delay = backoff_delay(self._failures, cfg.backoff_initial_s, cfg.backoff_max_s, self._rng)
                self._health("backoff", f"{delay:.3f}", self._failures)
                await asyncio.sleep(delay)

    async def _session(self, http: aiohttp.ClientSession) -> str:
        """One connection from connect to close: ``end``, ``rotate`` (max age) or ``fail``."""
        cfg, loop = self.config, asyncio.get_running_loop()
        self.session += 1
        self._health("connecting", self.conn.url, self._failures + 1)
        try:
            ws = await connect(
                self.conn.url,
                open_timeout=cfg.open_timeout_s,
                close_timeout=cfg.close_timeout_s,
                ping_interval=cfg.ping_interval_s,
                max_size=None,
                max_queue=None,  # never pause reading: everything goes to our queue, and a close frame is seen at once
                proxy=True if cfg.use_env_proxy else None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._why = f"connect: {exc!r}"
            self._health("disconnected", self._why)
            return "fail"
        self._health("connected")
        self._last_msg = loop.time()
        watchdog = asyncio.create_task(self._watch(ws, loop.time()))
        rest: asyncio.Task[None] | None = None
        outcome, self._why = "fail", ""
        try:
            for text in self.conn.subscribe:
                await ws.send(text)
            first = True
            async for msg in ws:
                self._out.append(Frame(self.conn.name, self.session, time.time_ns(), msg))
                self._last_msg = loop.time()
                self.frames += 1
                if first:
                    first = False
                    rest = asyncio.create_task(self._after_subscribe(http, ws))
                if cfg.max_frames is not None and self.frames >= cfg.max_frames:
                    outcome = "end"
                    break
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            if rest is not None:
                rest.cancel()
            await ws.close()
        if outcome == "end":
            return outcome
        if self._why in ("stalled", "max_age") or self._why.startswith("rest:"):
            return "rotate" if self._why == "max_age" else "fail"
        code, reason = ws.close_code, ws.close_reason or ""
        if cfg.stop_on_end_of_data and code == 1000 and reason == END_OF_DATA_REASON:
            return "end"
        self._why = f"closed: code={code} reason={reason!r}"
        self._health("disconnected", self._why)
        return "fail"

    async def _after_subscribe(self, http: aiohttp.ClientSession, ws: ClientConnection) -> None:
        """Fetch this session's REST bodies; then the subscribe counts as good (backoff resets)."""
        cfg, session = self.config, self.session
        for url in self.conn.rest_urls:
            try:
                ts, body = await fetch_rest(
                    url, session=http, tries=cfg.rest_tries, backoff_initial_s=cfg.backoff_initial_s,
                    backoff_max_s=cfg.backoff_max_s, timeout_s=cfg.rest_timeout_s,
                )  # fmt: skip
            except ConnectionFailedError as exc:
                self._why = f"rest: {exc}"
                self._health("rest_failed", str(exc))
                await ws.close()
                return
            self._out.append(Frame(self.conn.name, session, ts, body.decode("utf-8", "replace"), url))
        self._failures = 0
        self._health("subscribed")

    async def _watch(self, ws: ClientConnection, opened: float) -> None:
        """Close the connection after ``silence_timeout_s`` without a message, or at ``max_age_s``."""
        cfg, loop = self.config, asyncio.get_running_loop()
        tick = min(1.0, cfg.silence_timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if now - self._last_msg > cfg.silence_timeout_s:
                self._why = "stalled"
                self._health("stalled", f"no message for {now - self._last_msg:.1f} s")
                break
            if cfg.max_age_s is not None and now - opened > cfg.max_age_s:
                self._why = "max_age"
                self._health("max_age", f"connection {now - opened:.0f} s old")
                break
        await ws.close(code=1000, reason=self._why)


class WsResume(msgspec.Struct, frozen=True):
    """Resume state of one partition: counts only (a live feed cannot rewind)."""

    frames: int = 0
    sessions: int = 0


class WsPartition(StatefulSourcePartition[WsItem, WsResume]):
    def __init__(self, conn: WsConnection, config: WsConfig, resume: WsResume | None) -> None:
        resume = resume or WsResume()
        self._config = config
        self._frames = resume.frames
        self._client = WsClient(conn, config, frames=resume.frames, sessions=resume.sessions).start()
        self._awake: datetime | None = None

    def next_batch(self) -> list[WsItem]:
        items = self._client.drain()
        if items:
            self._awake = None
            self._frames += sum(1 for item in items if isinstance(item, Frame) and not item.url)
            return items
        if self._client.failed is not None:
            raise self._client.failed
        if self._client.done:
            raise StopIteration
        self._awake = datetime.now(UTC) + timedelta(seconds=self._config.poll_interval_s)
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> WsResume:
        return WsResume(self._frames, self._client.session)

    def close(self) -> None:
        self._client.stop()


class WsSource(FixedPartitionedSource[WsItem, WsResume]):
    """Websocket connections as a Bytewax source: one partition per connection (names must be distinct)."""

    def __init__(self, connections: Sequence[WsConnection], config: WsConfig | None = None) -> None:
        names = [c.name for c in connections]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"connection names must be non-empty and distinct: {names}")
        self.connections = {c.name: c for c in connections}
        self.config = config or WsConfig()

    def list_parts(self) -> list[str]:
        return list(self.connections)

    def build_part(self, step_id: str, for_part: str, resume_state: WsResume | None) -> WsPartition:
        return WsPartition(self.connections[for_part], self.config, resume_state)

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
  ``worker_died`` (detail = the error line), ``failed`` and ``ended``. Route them with ``isinstance`` to a health
  stream.

Resilience: capped, jittered exponential backoff (``initial * 2**(n-1)`` capped at ``backoff_max_s``, then drawn
uniformly from its upper half) that resets after a good subscribe; a silence watchdog (no message for
``silence_timeout_s`` -> reconnect); resubscribe (``subscribe`` texts re-sent) on every connection; a reconnect,
without backoff, before ``max_age_s`` (Binance closes at 24 h); after ``max_tries`` consecutive failed tries,
:class:`ccf.errors.ConnectionFailedError` is raised from ``next_batch``. A server closing with code 1000 and reason
:data:`END_OF_DATA_REASON` (our replay server at the end of a capture) ends the source when ``stop_on_end_of_data``.

Worker deaths: an exception the client does not handle (a bug, or an error of a kind no rule above names), in the
connection loop or in a session's helpers (watchdog, REST snapshots), is caught at the top of the client's thread and
logged there once with its traceback; a thread that is gone without having ended (no ``ended``/``failed``, no stop
asked for) counts the same. :meth:`WsClient.drain` notices either: ``worker_died``, then a restart after the same
backoff (a new session, like a reconnect), or, after ``max_restarts`` restarts in a row without a message received in
between, ``failed`` and :class:`ccf.errors.WorkerDiedError` (its ``__cause__`` the last exception) from ``next_batch``.

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
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import aiohttp
import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ccf.backoff import backoff_delay as backoff_delay  # re-exported (ccf.ingest.fetcher imports it from here)
from ccf.errors import ConnectionFailedError, WorkerDiedError
from ccf.wsource_rest import fetch_rest as fetch_rest  # re-exported, like everything from ccf.wsource_*
from ccf.wsource_rest import fetch_rest_sync as fetch_rest_sync
from ccf.wsource_types import END_OF_DATA_REASON as END_OF_DATA_REASON
from ccf.wsource_types import Frame as Frame
from ccf.wsource_types import HealthEvent as HealthEvent
from ccf.wsource_types import HealthKind as HealthKind
from ccf.wsource_types import WsConfig as WsConfig
from ccf.wsource_types import WsConnection as WsConnection
from ccf.wsource_types import WsItem as WsItem

logger = logging.getLogger(__name__)


def error_line(exc: BaseException | None) -> str:
    """What a worker died of, in one line."""
    if exc is None:
        return "worker thread gone without an end"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


def close_loop(loop: asyncio.AbstractEventLoop, name: str) -> None:
    """Cancel what is left on a worker's loop and close it (never raises: the thread is ending)."""
    try:
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:
        logger.exception("ws %s: closing the worker's event loop failed", name)
    finally:
        loop.close()


class WsClient:
    """One connection, kept alive in a daemon thread with its own event loop; :meth:`drain` takes what arrived and
    restarts a thread that died (see the module docstring)."""

    def __init__(self, conn: WsConnection, config: WsConfig, *, frames: int = 0, sessions: int = 0) -> None:
        self.conn = conn
        self.config = config
        self.frames = frames
        self.session = sessions
        self.failed: ConnectionFailedError | None = None
        self.done = False
        self.deaths = 0  # worker deaths in a row, without a message received in between
        self.restarts = 0
        self._error: BaseException | None = None  # what the thread died of (set by the thread, read once it is gone)
        self._crash: BaseException | None = None  # what a session helper task died of
        self._stopping = False
        self._restart_at: float | None = None
        self._life_frames = frames
        self._out: deque[WsItem] = deque()
        self._failures = 0
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._last_msg = 0.0
        self._why = ""

    def start(self) -> WsClient:
        self._loop = loop = asyncio.new_event_loop()
        self._life_frames = self.frames
        self._thread = threading.Thread(target=self._run, args=(loop,), name=f"ws-{self.conn.name}", daemon=True)
        self._thread.start()
        return self

    def drain(self) -> list[WsItem]:
        """Everything received since the last call (never blocks); notices a dead worker thread and restarts it."""
        thread = self._thread
        if thread is not None and not thread.is_alive() and not (self.done or self.failed or self._stopping):
            self._thread = None  # gone: it appends nothing more, so what it queued comes before what _died says
            self._died()
        elif self._restart_at is not None and time.monotonic() >= self._restart_at and not self._stopping:
            self._restart_at = None
            self.restarts += 1
            self.start()
        out = self._out
        return [out.popleft() for _ in range(len(out))]

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the thread is ending anyway
            loop.call_soon_threadsafe(lambda: self._task.cancel() if self._task is not None else None)
        thread.join(timeout_s)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            self._task = loop.create_task(self._main())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass  # stop(); a cancellation nobody asked for leaves done/failed unset: drain() counts it as a death
        except Exception as exc:  # whatever no rule handles: the one log with its traceback; drain() takes it on
            logger.exception("ws %s session %d: worker died", self.conn.name, self.session)
            self._error = exc
        finally:
            close_loop(loop, self.conn.name)

    def _died(self) -> None:
        """The worker thread is gone without having ended: restart it after a backoff, or fail after too many."""
        exc, self._error = self._error, None
        line = error_line(exc)
        if exc is None:
            logger.error("ws %s session %d: worker thread gone without an end", self.conn.name, self.session)
        self.deaths = 1 if self.frames > self._life_frames else self.deaths + 1
        self._health("worker_died", line, self.deaths)
        cfg = self.config
        if self.deaths > cfg.max_restarts:
            self.failed = WorkerDiedError(
                f"{self.conn.name} ({self.conn.url}): worker died {self.deaths} times in a row without a message"
                f" in between ({cfg.max_restarts} restarts), last: {line}"
            )
            self.failed.__cause__ = exc
            self._health("failed", str(self.failed), self.deaths)
            return
        delay = backoff_delay(self.deaths, cfg.backoff_initial_s, cfg.backoff_max_s, self._rng)
        self._health("backoff", f"{delay:.3f}", self.deaths)
        self._restart_at = time.monotonic() + delay

    def _health(self, kind: HealthKind, detail: str = "", attempt: int = 0) -> None:
        warn = ("disconnected", "stalled", "rest_failed", "worker_died", "failed")
        log = logger.warning if kind in warn else logger.info
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
        watchdog = asyncio.create_task(self._guard(ws, self._watch(ws, loop.time())))
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
                    rest = asyncio.create_task(self._guard(ws, self._after_subscribe(http, ws)))
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
        if self._crash is not None:  # a helper died: so does the worker, of the same exception
            crash, self._crash = self._crash, None
            raise crash
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

    async def _guard(self, ws: ClientConnection, work: Coroutine[Any, Any, None]) -> None:
        """Run a session helper; if it raises, close the connection so that the session raises it (not lost)."""
        try:
            await work
        except Exception as exc:
            self._crash = exc
            await ws.close(code=1011, reason="client error")

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
    client_type: ClassVar[type[WsClient]] = WsClient

    def __init__(self, conn: WsConnection, config: WsConfig, resume: WsResume | None) -> None:
        resume = resume or WsResume()
        self._config = config
        self._frames = resume.frames
        self._client = self.client_type(conn, config, frames=resume.frames, sessions=resume.sessions).start()
        self._awake: datetime | None = None

    def next_batch(self) -> list[WsItem]:
        client = self._client
        failed, done = client.failed, client.done  # read first: what they announce is queued by then
        items = client.drain()
        if items:
            self._awake = None
            self._frames += sum(1 for item in items if isinstance(item, Frame) and not item.url)
            return items
        if failed is not None:
            raise failed
        if done:
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

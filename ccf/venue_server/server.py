"""A local venue server that speaks Binance's websocket and REST protocol (aiohttp, loopback).

Endpoints

* ``GET /stream?streams=ethusdt@depth@100ms/ethusdt@trade/ethusdt@bookTicker`` (websocket): combined streams,
  every message ``{"stream":..,"data":..}``. ``GET /ws`` and ``/ws/<stream>``: raw streams (the ``data`` only).
  Both take the live methods ``{"method":"SUBSCRIBE","params":[..],"id":1}`` (answer ``{"result":null,"id":1}``),
  ``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS``; both take ``fault=<spec>[,<spec>]`` query parameters
  (see :mod:`ccf.venue_server.faults`).
* ``GET /api/v3/depth?symbol=ETHUSDT&limit=1000`` and ``GET /fapi/v1/depth`` (same book, the server's market
  format): the current book with ``lastUpdateId``. ``GET /api/v3/ping``: ``{}``.
* ``POST /control/faults``: ``{"faults": ["drop_diff@5", {"kind": "stall", "arg": 2}], "conn": 3}`` (or a bare list)
  adds faults to every open connection (or only ``conn``), counted from now; with no connection open they wait for
  the next one. ``GET /control/stats``: what was sent, requested and injected.

One shared market: the feed starts when the first connection subscribes, pauses while nobody is subscribed and is
broadcast to every subscriber of each stream. Pacing: ``speed`` 1 = the feed's own time, N = N× faster, 0 = as fast
as the slowest subscriber reads (each connection has a bounded queue, so a stalled connection holds the feed up:
this server is for tests and development, one or two clients). When the feed ends (replay done, synthetic
``duration_s`` reached) every connection is closed with code 1000 and :data:`ccf.wsource.END_OF_DATA_REASON`.
``max_conn_age_s`` closes a connection with 1001 when it gets that old (Binance does at 24 h).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import WSMsgType, web

from ccf.synthetic import DEFAULT_START_NS, SyntheticVenue
from ccf.venue_server.binance_wire import Market, stream_kind, stream_names
from ccf.venue_server.faults import DIFF_KINDS, SERVER_KINDS, Fault, fault_from_json, parse_faults
from ccf.venue_server.feeds import Feed, ReplayFeed, SyntheticFeed, WireEvent, payload_of
from ccf.wsource import END_OF_DATA_REASON

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """What the server serves. ``speed`` 0 = as fast as possible; ``faults`` apply to every new connection."""

    mode: Literal["synthetic", "replay"] = "synthetic"
    symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT")
    seed: int = 7
    alpha: float = 0.8
    speed: float = 1.0
    files: tuple[Path, ...] = ()
    market: Market = "spot"
    faults: tuple[Fault, ...] = ()
    max_conn_age_s: float | None = None
    duration_s: float | None = None
    start_ns: int = DEFAULT_START_NS
    host: str = "127.0.0.1"
    port: int = 0
    ping_interval_s: float | None = None
    queue_size: int = 4096

    def __post_init__(self) -> None:
        if self.speed < 0 or self.queue_size < 1:
            raise ValueError(f"speed must be >= 0 and queue_size >= 1, got {self.speed}, {self.queue_size}")
        if self.mode == "replay" and not self.files:
            raise ValueError("replay mode needs at least one capture file")
        if self.mode == "synthetic" and not self.symbols:
            raise ValueError("synthetic mode needs at least one symbol")

    def make_feed(self) -> Feed:
        if self.mode == "replay":
            return ReplayFeed(self.files, self.market)
        end = None if self.duration_s is None else self.start_ns + round(self.duration_s * 1e9)
        venue = SyntheticVenue(list(self.symbols), self.seed, alpha=self.alpha, start_ns=self.start_ns, end_ns=end)
        return SyntheticFeed(venue, self.market)


@dataclass(eq=False)
class _Conn:
    id: int
    ws: web.WebSocketResponse
    raw: bool
    abort: Any
    queue: asyncio.Queue[WireEvent | None]
    faults: list[Fault]
    streams: set[str] = field(default_factory=set)
    sent: int = 0
    opened: float = field(default_factory=time.monotonic)
    held: WireEvent | None = None

    def take_fault(self, depth: bool) -> Fault | None:
        for i, f in enumerate(self.faults):
            if f.after <= self.sent and (depth or f.kind not in DIFF_KINDS):
                return self.faults.pop(i)
        return None


class VenueServer:
    """The server; :meth:`start` and :meth:`stop` run inside an event loop (see :class:`ServerThread`)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.feed = config.make_feed()
        self.port = 0
        self.ended = False
        self._conns: dict[int, _Conn] = {}
        self._next_id = 0
        self._late_snapshots: list[float] = []
        self._pending: list[Fault] = []
        self._counts: Counter[str] = Counter()
        self._fault_log: list[dict[str, object]] = []
        self._subscribed: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._producer: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream", self._ws_handler)
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_get("/ws/{stream}", self._ws_handler)
        app.router.add_get("/api/v3/depth", self._depth)
        app.router.add_get("/fapi/v1/depth", self._depth)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_post("/control/faults", self._control_faults)
        app.router.add_get("/control/stats", self._control_stats)
        return app

    async def start(self) -> int:
        """Listen and start the feed task; returns the port (``config.port`` 0 picks a free one)."""
        self._subscribed = asyncio.Event()
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._producer = asyncio.create_task(self._produce(), name="venue-server-feed")
        logger.info("venue server (%s, %s) on %s:%d", self.config.mode, self.feed.symbols, self.config.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        for conn in list(self._conns.values()):
            await conn.ws.close(code=1001, message=b"server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the shared feed ------------------------------------------------------------------------------------------

    async def _produce(self) -> None:
        assert self._subscribed is not None
        loop = asyncio.get_running_loop()
        speed = self.config.speed
        anchor: tuple[int, float] | None = None
        n = 0
        for batch in self.feed.batches():
            for ev in batch:
                if not self._subscribed.is_set():
                    await self._subscribed.wait()
                    anchor = None
                if speed > 0:
                    if anchor is None:
                        anchor = (ev.ts_ns, loop.time())
                    delay = anchor[1] + (ev.ts_ns - anchor[0]) / 1e9 / speed - loop.time()
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                if ev.stream:
                    self._counts["events"] += 1
                    for conn in list(self._conns.values()):
                        if ev.stream in conn.streams:
                            await conn.queue.put(ev)
                self.feed.published(ev)
                n += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)
        self.ended = True
        logger.info("venue server: feed ended after %d events", self._counts["events"])
        for conn in list(self._conns.values()):
            await conn.queue.put(None)

    def _update_subscribed(self) -> None:
        assert self._subscribed is not None
        if any(c.streams for c in self._conns.values()):
            self._subscribed.set()
        else:
            self._subscribed.clear()

    # -- websocket ------------------------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self.config.ping_interval_s, max_msg_size=0, compress=False)
        await ws.prepare(request)
        transport = request.transport
        self._next_id += 1
        try:
            faults = [*self.config.faults, *parse_faults(request.query.getall("fault", []))]
        except ValueError as exc:
            await ws.close(code=1008, message=str(exc).encode()[:120])
            return ws
        faults += self._pending
        self._pending = []
        self._add_server_faults(faults)
        conn = _Conn(
            id=self._next_id,
            ws=ws,
            raw=request.path.startswith("/ws"),
            abort=transport.abort if transport is not None else None,
            queue=asyncio.Queue(self.config.queue_size),
            faults=[f for f in faults if f.kind not in SERVER_KINDS],
        )
        self._conns[conn.id] = conn
        self._counts["connections_opened"] += 1
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        if "stream" in request.match_info:
            streams.append(request.match_info["stream"])
        self._subscribe(conn, streams)
        sender = asyncio.create_task(self._sender(conn), name=f"venue-server-send-{conn.id}")
        ager = asyncio.create_task(self._age_limit(conn)) if self.config.max_conn_age_s else None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(conn, msg.data)
        finally:
            self._conns.pop(conn.id, None)
            self._counts["connections_closed"] += 1
            while not conn.queue.empty():  # unblock the feed if it waits on this queue
                conn.queue.get_nowait()
            for task in (sender, ager):
                if task is not None:
                    task.cancel()
            self._update_subscribed()
        return ws

    def _subscribe(self, conn: _Conn, streams: Sequence[str]) -> None:
        if not streams:
            return
        conn.streams.update(streams)
        self._counts["subscriptions"] += len(streams)
        self._update_subscribed()
        if self.ended:
            conn.queue.put_nowait(None)

    async def _on_text(self, conn: _Conn, text: str) -> None:
        try:
            req = orjson.loads(text)
            method, params, rid = req.get("method"), req.get("params", []), req.get("id")
        except (orjson.JSONDecodeError, AttributeError):
            await conn.ws.send_str('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}')
            return
        if method == "SUBSCRIBE" and isinstance(params, list):
            self._subscribe(conn, [str(p) for p in params])
            reply: dict[str, object] = {"result": None, "id": rid}
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            conn.streams.difference_update(str(p) for p in params)
            self._update_subscribed()
            reply = {"result": None, "id": rid}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(conn.streams), "id": rid}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid}
        await conn.ws.send_str(orjson.dumps(reply).decode())

    async def _age_limit(self, conn: _Conn) -> None:
        assert self.config.max_conn_age_s is not None
        await asyncio.sleep(self.config.max_conn_age_s)
        self._counts["max_age_closes"] += 1
        await conn.ws.close(code=1001, message=b"max connection age")

    async def _sender(self, conn: _Conn) -> None:
        try:
            while True:
                ev = await conn.queue.get()
                if ev is None:
                    await conn.ws.close(code=1000, message=END_OF_DATA_REASON.encode())
                    return
                await self._emit(conn, ev)
        except ConnectionError as exc:
            logger.debug("venue server conn %d: send failed: %s", conn.id, exc)

    async def _send(self, conn: _Conn, ev: WireEvent, text: str | None = None) -> None:
        await conn.ws.send_str(text if text is not None else (payload_of(ev) if conn.raw else ev.text))
        conn.sent += 1
        self._counts["messages_sent"] += 1
        self._counts["sent_" + stream_kind(ev.stream)] += 1

    async def _emit(self, conn: _Conn, ev: WireEvent) -> None:
        depth = stream_kind(ev.stream) == "depth"
        fault = conn.take_fault(depth) if conn.faults else None
        if fault is None:
            await self._send(conn, ev)
            if depth and conn.held is not None and conn.held.stream == ev.stream:
                held, conn.held = conn.held, None
                await self._send(conn, held)
            return
        entry: dict[str, object] = {**fault.to_dict(), "conn": conn.id, "at": conn.sent, "stream": ev.stream}
        if depth:
            data = orjson.loads(payload_of(ev))
            entry.update(U=data.get("U"), u=data.get("u"))
        self._fault_log.append(entry)
        logger.info("venue server conn %d: injecting %s", conn.id, entry)
        if fault.kind == "drop_diff":
            return
        if fault.kind == "reorder_diffs":
            conn.held = ev
            return
        if fault.kind == "disconnect":
            if conn.abort is not None:
                conn.abort()
            return
        if fault.kind == "stall":
            await asyncio.sleep(fault.arg)
        text = payload_of(ev) if conn.raw else ev.text
        if fault.kind == "corrupt_json":
            text = text[: len(text) // 2]
        await self._send(conn, ev, text)
        if fault.kind == "duplicate_diff":
            await self._send(conn, ev, text)

    # -- REST and control -----------------------------------------------------------------------------------------

    async def _depth(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "").upper()
        try:
            limit = max(1, min(5000, int(request.query.get("limit", "100"))))
        except ValueError:
            return web.json_response(
                {"code": -1100, "msg": "Illegal characters found in parameter 'limit'."}, status=400
            )
        self._counts["rest_requests"] += 1
        body = self.feed.rest_depth(symbol, limit)
        if body is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        if self._late_snapshots:
            delay = self._late_snapshots.pop(0)
            self._fault_log.append({"kind": "late_snapshot", "arg": delay, "symbol": symbol})
            await asyncio.sleep(delay)
        return web.Response(body=body, content_type="application/json")

    async def _ping(self, _request: web.Request) -> web.Response:
        return web.json_response({})

    def _add_server_faults(self, faults: Sequence[Fault]) -> None:
        for f in faults:
            if f.kind == "late_snapshot":
                self._late_snapshots.append(f.arg)
            elif f.kind == "wrong_checksum":
                self._fault_log.append({**f.to_dict(), "note": "no-op: Binance books have no checksum"})

    async def _control_faults(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            items = body.get("faults", []) if isinstance(body, dict) else body
            faults = [fault_from_json(item) for item in items]
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        target = body.get("conn") if isinstance(body, dict) else None
        self._add_server_faults(faults)
        conn_faults = [f for f in faults if f.kind not in SERVER_KINDS]
        conns = [c for c in self._conns.values() if target is None or c.id == target]
        for conn in conns:
            conn.faults.extend(f.shifted(conn.sent) for f in conn_faults)
        if not conns and conn_faults:
            self._pending.extend(conn_faults)
        return web.json_response({"accepted": len(faults), "connections": [c.id for c in conns]})

    def stats(self) -> dict[str, object]:
        return {
            **self._counts,
            "connections_open": len(self._conns),
            "connections": [
                {"id": c.id, "streams": sorted(c.streams), "sent": c.sent, "age_s": time.monotonic() - c.opened}
                for c in self._conns.values()
            ],
            "faults": list(self._fault_log),
            "ended": self.ended,
            "symbols": list(self.feed.symbols),
            "streams": [s for sym in self.feed.symbols for s in stream_names(sym)],
        }

    async def _control_stats(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type="application/json")

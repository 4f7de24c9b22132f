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
broadcast to every subscriber of each stream. Pacing: ``speed`` 1 = the feed's own time (a capture's receive times),
N = N× faster, 0 = as fast as the clients that keep up read. Times in the messages: as recorded, or with
``shift_to_now`` all moved by one offset (see :class:`ServerConfig`).

Slow clients never slow the others down: each connection has a bounded queue (``queue_size``) and the feed never
awaits it at ``speed > 0``: a connection whose queue is full is closed with 1008 and a reason (Binance disconnects
slow consumers too), counted as ``slow_client_disconnects``. At speed 0 there is no schedule to fall behind, so the
feed waits for a full queue up to ``slow_client_grace_s`` (the feed goes as fast as the slowest client that keeps
within that) and then closes that connection the same way. A connection inside an injected ``stall`` fault is not a
slow client: at ``speed > 0`` its queue may grow past the bound for the stall; at speed 0 the feed waits for it.

When the feed ends (replay done, synthetic ``duration_s`` reached) every connection is closed with code 1000 and
:data:`ccf.wsource.END_OF_DATA_REASON`. ``max_conn_age_s`` closes a connection with 1001 when it gets that old
(Binance does at 24 h). REST for a symbol the feed has no book for (unknown, or a replay without a snapshot line for
it) answers 400 ``{"code":-1121,"msg":"Invalid symbol."}``, as Binance does for a symbol it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence

import orjson
from aiohttp import WSMsgType, web

from ccf.venue_server.binance_wire import shift_rest_times, shift_times, stream_names
from ccf.venue_server.config import ServerConfig
from ccf.venue_server.connection import Connection
from ccf.venue_server.faults import SERVER_KINDS, Fault, fault_from_json, parse_faults
from ccf.venue_server.feeds import WireEvent
from ccf.venue_server.outbox import Outbox

logger = logging.getLogger(__name__)


__all__ = ["ServerConfig", "VenueServer"]


class VenueServer:
    """The server; :meth:`start` and :meth:`stop` run inside an event loop (see :class:`ServerThread`)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.feed = config.make_feed()
        self.port = 0
        self.ended = False
        self._conns: dict[int, Connection] = {}
        self._next_id = 0
        self._late_snapshots: list[float] = []
        self._pending: list[Fault] = []
        self._counts: Counter[str] = Counter()
        self._fault_log: list[dict[str, object]] = []
        self._subscribed: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._producer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.time_offset_ms = 0
        """Added to every time field sent (``shift_to_now``); 0 keeps the recorded times."""

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
        first = self.feed.first_event_ms
        if self.config.shift_to_now and first is not None:
            self.time_offset_ms = time.time_ns() // 1_000_000 - first
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
        speed, offset = self.config.speed, self.time_offset_ms
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
                    out = ev._replace(text=shift_times(ev.text, offset)) if offset else ev
                    full = [c for c in list(self._conns.values()) if ev.stream in c.streams and not c.outbox.offer(out)]
                    if full:
                        await self._overflow(full, out)
                self.feed.published(ev)
                n += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)
        self.ended = True
        logger.info("venue server: feed ended after %d events", self._counts["events"])
        for conn in list(self._conns.values()):
            conn.outbox.end()

    async def _overflow(self, full: Sequence[Connection], ev: WireEvent) -> None:
        """Connections whose queue is full: drop them (speed > 0) or give them a bounded grace first (speed 0)."""
        now = asyncio.get_running_loop().time()
        grace = self.config.slow_client_grace_s
        for conn in full:
            stalled = conn.stalled_until > now
            if self.config.speed > 0:
                if stalled:
                    conn.outbox.offer(ev, force=True)
                else:
                    self._drop_slow(conn)
            elif await conn.outbox.wait_space(max(now, conn.stalled_until) + grace) and conn.outbox.offer(ev):
                continue
            else:
                self._drop_slow(conn)

    def _drop_slow(self, conn: Connection) -> None:
        """Close a connection that does not keep up: 1008 with a reason (or a plain abort if it cannot be sent)."""
        if conn.dropped:
            return
        conn.dropped = True
        self._counts["slow_client_disconnects"] += 1
        logger.warning("venue server conn %d: slow consumer (%d messages queued), disconnected", conn.id,
                       len(conn.outbox))  # fmt: skip
        conn.outbox.close()
        conn.streams.clear()
        self._update_subscribed()
        task = asyncio.create_task(self._close_slow(conn), name=f"venue-server-drop-{conn.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_slow(self, conn: Connection) -> None:
        if conn.sender is not None:
            conn.sender.cancel()
        reason = f"slow consumer: send queue of {self.config.queue_size} messages full".encode()
        try:
            async with asyncio.timeout(1.0):
                await conn.ws.close(code=1008, message=reason)
        except (TimeoutError, ConnectionError):
            if conn.abort is not None:
                conn.abort()

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
        conn = Connection(
            counts=self._counts,
            fault_log=self._fault_log,
            id=self._next_id,
            ws=ws,
            raw=request.path.startswith("/ws"),
            abort=transport.abort if transport is not None else None,
            outbox=Outbox(self.config.queue_size),
            faults=[f for f in faults if f.kind not in SERVER_KINDS],
        )
        self._conns[conn.id] = conn
        self._counts["connections_opened"] += 1
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        if "stream" in request.match_info:
            streams.append(request.match_info["stream"])
        self._subscribe(conn, streams)
        sender = conn.sender = asyncio.create_task(conn.run_sender(), name=f"venue-server-send-{conn.id}")
        ager = asyncio.create_task(self._age_limit(conn)) if self.config.max_conn_age_s else None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(conn, msg.data)
        finally:
            self._conns.pop(conn.id, None)
            self._counts["connections_closed"] += 1
            conn.outbox.close()  # unblocks the feed if it waits on this connection
            for task in (sender, ager):
                if task is not None:
                    task.cancel()
            self._update_subscribed()
        return ws

    def _subscribe(self, conn: Connection, streams: Sequence[str]) -> None:
        if not streams:
            return
        conn.streams.update(streams)
        self._counts["subscriptions"] += len(streams)
        self._update_subscribed()
        if self.ended:
            conn.outbox.end()

    async def _on_text(self, conn: Connection, text: str) -> None:
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

    async def _age_limit(self, conn: Connection) -> None:
        assert self.config.max_conn_age_s is not None
        await asyncio.sleep(self.config.max_conn_age_s)
        self._counts["max_age_closes"] += 1
        await conn.ws.close(code=1001, message=b"max connection age")

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
            self._counts["rest_no_book"] += 1
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        body = shift_rest_times(body, self.time_offset_ms)
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
            "slow_client_disconnects": 0,
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

"""One websocket connection of the venue server: what it is subscribed to, its queue, and its sender.

The sender takes messages from the connection's :class:`~ccf.venue_server.outbox.Outbox` in order and writes them,
injecting the connection's faults (:mod:`ccf.venue_server.faults`) on the way; at the end of the feed it closes the
connection with 1000 and :data:`ccf.wsource.END_OF_DATA_REASON`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ccf.venue_server.binance_wire import stream_kind
from ccf.venue_server.faults import DIFF_KINDS, Fault
from ccf.venue_server.feeds import WireEvent, payload_of
from ccf.venue_server.outbox import Outbox
from ccf.wsource import END_OF_DATA_REASON

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Connection:
    """One websocket connection: its subscriptions, queue, pending faults and the task that sends to it."""

    counts: Counter[str]
    """The server's counters (shared)."""
    fault_log: list[dict[str, object]]
    """The server's log of injected faults (shared)."""
    id: int
    ws: web.WebSocketResponse
    raw: bool
    abort: Any
    outbox: Outbox[WireEvent]
    faults: list[Fault]
    streams: set[str] = field(default_factory=set)
    sent: int = 0
    opened: float = field(default_factory=time.monotonic)
    held: WireEvent | None = None
    stalled_until: float = 0.0
    """Loop time an injected stall ends (not a slow client before then)."""
    sender: asyncio.Task[None] | None = None
    dropped: bool = False

    def take_fault(self, depth: bool) -> Fault | None:
        for i, f in enumerate(self.faults):
            if f.after <= self.sent and (depth or f.kind not in DIFF_KINDS):
                return self.faults.pop(i)
        return None

    async def run_sender(self) -> None:
        try:
            while True:
                ev = await self.outbox.get()
                if ev is None:
                    if not self.outbox.closed:  # closed: gone or dropped as a slow consumer, no goodbye here
                        await self.ws.close(code=1000, message=END_OF_DATA_REASON.encode())
                    return
                await self.emit(ev)
        except ConnectionError as exc:
            logger.debug("venue server conn %d: send failed: %s", self.id, exc)

    async def send(self, ev: WireEvent, text: str | None = None) -> None:
        await self.ws.send_str(text if text is not None else (payload_of(ev) if self.raw else ev.text))
        self.sent += 1
        self.counts["messages_sent"] += 1
        self.counts["sent_" + stream_kind(ev.stream)] += 1

    async def emit(self, ev: WireEvent) -> None:
        depth = stream_kind(ev.stream) == "depth"
        fault = self.take_fault(depth) if self.faults else None
        if fault is None:
            await self.send(ev)
            if depth and self.held is not None and self.held.stream == ev.stream:
                held, self.held = self.held, None
                await self.send(held)
            return
        entry: dict[str, object] = {**fault.to_dict(), "conn": self.id, "at": self.sent, "stream": ev.stream}
        if depth:
            data = orjson.loads(payload_of(ev))
            entry.update(U=data.get("U"), u=data.get("u"))
        self.fault_log.append(entry)
        logger.info("venue server conn %d: injecting %s", self.id, entry)
        if fault.kind == "drop_diff":
            return
        if fault.kind == "reorder_diffs":
            self.held = ev
            return
        if fault.kind == "disconnect":
            if self.abort is not None:
                self.abort()
            return
        if fault.kind == "stall":
            self.stalled_until = asyncio.get_running_loop().time() + fault.arg
            await asyncio.sleep(fault.arg)
        text = payload_of(ev) if self.raw else ev.text
        if fault.kind == "corrupt_json":
            text = text[: len(text) // 2]
        await self.send(ev, text)
        if fault.kind == "duplicate_diff":
            await self.send(ev, text)

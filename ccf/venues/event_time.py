"""One event time: venue time for the records whose message carries none.

Binance's spot ``bookTicker`` and its spot REST depth snapshot have no time field. Their parsers leave ``ts_event``
at :data:`~ccf.schemas.NO_VENUE_TIME` (0), and :class:`EventTimes`, fed every parsed record of one stream in arrival
order, stamps them with venue time, per ``(venue, symbol)``:

- a **snapshot** takes the event time of the depth update it bridges (the update holding
  ``last_update_id + 1``), when that update has been seen; otherwise the latest venue time of its symbol (it then
  precedes its bridging update, which is where it belongs);
- a **top of book** takes the event time of the depth update holding its ``update_id`` when seen, otherwise the
  latest venue time of its symbol (Binance sends ``bookTicker`` before the 100 ms diff that holds the same id, so it
  is ordered by that diff);
- a record stamped before its symbol has any venue time keeps 0 (it never holds a merge back, and neither snapshots
  nor tops move windows).

The wall clock never enters ``ts_event``. Readers (backtests), the ingest connector and the in-process live source
all run their records through this one class, so every path sees the same times.

>>> from ccf.schemas import BookDelta, BookSnapshot, BookTop
>>> et = EventTimes()
>>> def d(first, last, ts): return BookDelta("binance", "ETH-USDT", ts, 99, (), (), first_update_id=first, last_update_id=last)
>>> _ = et.stamp(d(10, 12, 1_000))
>>> _ = et.stamp(d(13, 15, 2_000))
>>> et.stamp(BookSnapshot("binance", "ETH-USDT", 0, 99, (), (), last_update_id=13)).ts_event  # bridged by 13..15
2000
>>> et.stamp(BookTop("binance", "ETH-USDT", 0, 99, 1.0, 1.0, 2.0, 1.0, update_id=11)).ts_event
1000
>>> et.stamp(BookTop("binance", "ETH-USDT", 0, 99, 1.0, 1.0, 2.0, 1.0, update_id=16)).ts_event  # diff not seen yet
2000
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgspec

from ccf.schemas import NO_VENUE_TIME, BookDelta, BookSnapshot, BookTop, Trade

_HISTORY: Final = 512
"""Depth updates remembered per symbol for the lookups (a REST answer arrives within a few of them)."""


class _Clock:
    __slots__ = ("latest", "updates")

    def __init__(self) -> None:
        self.latest = NO_VENUE_TIME
        self.updates: deque[tuple[int, int, int]] = deque(maxlen=_HISTORY)  # (first id, last id, ts_event)

    def time_of(self, update_id: int) -> int:
        """Event time of the remembered update holding ``update_id``, else the latest venue time."""
        for first, last, ts in reversed(self.updates):
            if first <= update_id <= last:
                return ts
            if last < update_id:
                break  # updates are in id order: an older one cannot hold it
        return self.latest


class EventTimes:
    """Stamps venue time on the records of one stream that carry none (see the module docstring). Pickles."""

    def __init__(self) -> None:
        self._clocks: dict[tuple[str, str], _Clock] = {}

    def _clock(self, venue: str, symbol: str) -> _Clock:
        clock = self._clocks.get((venue, symbol))
        if clock is None:
            clock = self._clocks[venue, symbol] = _Clock()
        return clock

    def stamp(self, record: Any) -> Any:
        """The record with venue time (the same object when it already has one). ``(record, extra)`` pairs and
        records of other types pass through with only the record part considered."""
        if type(record) is tuple:
            stamped = self.stamp(record[0])
            return record if stamped is record[0] else (stamped, record[1])
        kind = type(record)
        if kind is BookDelta:
            clock = self._clock(record.venue, record.symbol)
            if record.ts_event > clock.latest:
                clock.latest = record.ts_event
            if record.last_update_id:
                clock.updates.append((record.first_update_id, record.last_update_id, record.ts_event))
            return record
        if kind is Trade:
            clock = self._clock(record.venue, record.symbol)
            if record.ts_event > clock.latest:
                clock.latest = record.ts_event
            return record
        if isinstance(record, BookSnapshot | BookTop) and record.ts_event == NO_VENUE_TIME:
            clock = self._clock(record.venue, record.symbol)
            if isinstance(record, BookSnapshot):
                ts = clock.time_of(record.last_update_id + 1)
            else:
                ts = clock.time_of(record.update_id)
            return msgspec.structs.replace(record, ts_event=ts) if ts != NO_VENUE_TIME else record
        return record

    def stamp_all(self, records: Iterable[Any]) -> Iterator[Any]:
        """:meth:`stamp` over a stream."""
        stamp = self.stamp
        for record in records:
            yield stamp(record)

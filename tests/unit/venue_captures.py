"""Read cryptofeed playback captures (``shared/data/cryptofeed_sample_data``) for the venue tests.

Line 1 is ``<ws url> <-> <ts>``, then ``<ws url> <- <ts>: <json sent>`` for what the client sent, then
``<ts>: <raw message>`` for each message received. Data lives outside the repo: ``CCF_DATA_DIR`` or
``<repo root>/../shared/data``; a missing file fails the test.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from ccf.book import BookEvent, SymbolBook, SyncRule
from ccf.schemas import BookDelta, BookSnapshot
from tests.datafiles import data_file

ROOT = Path(__file__).resolve().parents[2]


def capture_path(relative: str) -> Path:
    """The path of a data file; a missing one fails the test (these tests exist to run on the real data)."""
    return data_file(relative)


def seconds_to_ns(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def received(relative: str) -> Iterator[tuple[int, str]]:
    """``(ts_recv_ns, raw message)`` for each received message of a capture, in file order."""
    with gzip.open(capture_path(relative), "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line.startswith(("wss://", "ws://", "https://", "http://")):
                continue
            ts, sep, raw = line.partition(": ")
            if sep:
                yield seconds_to_ns(ts), raw


def sent(relative: str) -> list[str]:
    """The messages the client sent (subscribe requests)."""
    with gzip.open(capture_path(relative), "rt", encoding="utf-8") as fh:
        return [line.split(": ", 1)[1].rstrip("\n") for line in fh if " <- " in line.split(": ", 1)[0]]


class Replay:
    """Books per symbol fed through a venue's sync rule, counting events; asserts no book is ever crossed."""

    def __init__(self, venue: str, rule_factory: Callable[[], SyncRule]) -> None:
        self.venue = venue
        self.rule_factory = rule_factory
        self.books: dict[str, SymbolBook] = {}
        self.events: Counter[str] = Counter()

    def feed(self, record: object, raw: object = None) -> BookEvent | None:
        if not isinstance(record, BookSnapshot | BookDelta):
            return None
        sb = self.books.get(record.symbol)
        if sb is None:
            sb = self.books[record.symbol] = SymbolBook(self.venue, record.symbol, self.rule_factory())
        event = BookEvent(sb.on_snapshot(record, raw) if isinstance(record, BookSnapshot) else sb.on_delta(record, raw))
        self.events[event.name] += 1
        assert not sb.book.is_crossed(), f"{record.symbol} crossed: {sb!r}"
        return event


def connection_url(relative: str) -> str:
    """The websocket URL from the capture's first line."""
    with gzip.open(capture_path(relative), "rt", encoding="utf-8") as fh:
        return fh.readline().split(" <-> ", 1)[0]

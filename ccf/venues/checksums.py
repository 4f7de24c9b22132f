"""Venue book checksums (CRC32 over the venue's own decimal text) and the text they need beside the book.

The checksums hash the venue's *strings*, so ``"0.05000"`` and ``"0.05"`` differ: the sync rules keep a
:class:`LevelText` (float price -> the price and size text last sent for that level) next to the float book and
read the top levels' text from it. Pure functions; no state outside :class:`LevelText`.

Kraken (spot WS v1 and v2): top 10 asks low to high, then top 10 bids high to low; each price and size with the
``.`` removed and leading zeros stripped, all concatenated; unsigned CRC32.

>>> kraken_checksum([("0.05005", "0.00000500")], [("0.05000", "0.00000500")])
3851508195
>>> kraken_text("0.00000500"), kraken_text("45285.2")
('500', '452852')

OKX v5: the first 25 levels interleaved ``bid_px:bid_sz:ask_px:ask_sz:...`` (the longer side continues alone when
one side is shorter), CRC32 as a *signed* 32-bit integer.

>>> okx_checksum([("3366.1", "7")], [("3366.8", "9"), ("3368", "8")])
-1471518219
>>> okx_checksum_text([("3366.1", "7")], [("3366.8", "9"), ("3368", "8")])
'3366.1:7:3366.8:9:3368:8'
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from ccf.book import OrderBook

TextLevel: TypeAlias = tuple[str, str]
"""One level as the venue wrote it: ``(price_text, size_text)``."""

KRAKEN_DEPTH: Final = 10
OKX_DEPTH: Final = 25


def crc32(text: str) -> int:
    """Unsigned CRC32 (ISO 3309, zlib) of the ASCII text."""
    return zlib.crc32(text.encode("ascii")) & 0xFFFFFFFF


def to_signed32(value: int) -> int:
    """Two's-complement reading of an unsigned 32-bit value.

    >>> to_signed32(0xFFFFFFFF), to_signed32(5)
    (-1, 5)
    """
    return value - (1 << 32) if value & 0x80000000 else value


def kraken_text(value: str) -> str:
    """A Kraken decimal as it enters the checksum: ``.`` removed, then leading zeros stripped."""
    return value.replace(".", "").lstrip("0")


def kraken_checksum(asks: Iterable[TextLevel], bids: Iterable[TextLevel]) -> int:
    """Kraken's book checksum over the best asks (low to high) and best bids (high to low); only the first 10 of
    each are read."""
    parts: list[str] = []
    for side in (asks, bids):
        for i, (price, size) in enumerate(side):
            if i == KRAKEN_DEPTH:
                break
            parts.append(kraken_text(price))
            parts.append(kraken_text(size))
    return crc32("".join(parts))


def okx_checksum_text(bids: Sequence[TextLevel], asks: Sequence[TextLevel]) -> str:
    """The string OKX hashes: best 25 bids and asks interleaved, a ``:`` between every field."""
    parts: list[str] = []
    for i in range(OKX_DEPTH):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    return ":".join(parts)


def okx_checksum(bids: Sequence[TextLevel], asks: Sequence[TextLevel]) -> int:
    """OKX's book checksum (signed 32-bit), best levels first on both sides."""
    return to_signed32(crc32(okx_checksum_text(bids, asks)))


class LevelText:
    """The venue's text of every level of one book side, keyed by the float price the book uses.

    >>> side = LevelText()
    >>> side.apply([("0.05000", "1.50000000"), ("0.05100", "2.00000000")])
    >>> side.apply([("0.05100", "0.00000000")])
    >>> side.top([0.05, 0.051])
    [('0.05000', '1.50000000')]
    """

    __slots__ = ("_text",)

    def __init__(self) -> None:
        self._text: dict[float, TextLevel] = {}

    def clear(self) -> None:
        self._text.clear()

    def apply(self, levels: Iterable[TextLevel]) -> None:
        """Record levels in order; a size that parses to 0 removes the level."""
        text = self._text
        for price, size in levels:
            key = float(price)
            if float(size) == 0.0:
                text.pop(key, None)
            else:
                text[key] = (price, size)

    def drop_except(self, keep: Iterable[float]) -> None:
        """Forget every level whose price is not in ``keep`` (after the book was truncated to its depth)."""
        kept = set(keep)
        for key in [k for k in self._text if k not in kept]:
            del self._text[key]

    def top(self, prices: Iterable[float]) -> list[TextLevel]:
        """The text of the given book prices, in the given order (prices the book has but we never saw are
        skipped, which makes the checksum fail loudly rather than raise)."""
        text = self._text
        return [text[p] for p in prices if p in text]

    def __len__(self) -> int:
        return len(self._text)

    def __getstate__(self) -> tuple[dict[float, TextLevel]]:
        return (self._text,)  # a tuple: an empty dict is falsy and pickle would skip __setstate__

    def __setstate__(self, state: tuple[dict[float, TextLevel]]) -> None:
        self._text = state[0]


class BookText:
    """The venue's text of both sides of one book, read in the book's order for a checksum.

    >>> from ccf.book import OrderBook
    >>> book, text = OrderBook(), BookText()
    >>> book.apply_snapshot([(0.05, 1.5)], [(0.051, 2.0)])
    >>> text.reset([("0.05000", "1.50000000")], [("0.05100", "2.00000000")])
    >>> text.top(book, 10)
    ([('0.05000', '1.50000000')], [('0.05100', '2.00000000')])
    """

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = LevelText()
        self.asks = LevelText()

    def reset(self, bids: Iterable[TextLevel], asks: Iterable[TextLevel]) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(bids, asks)

    def apply(self, bids: Iterable[TextLevel], asks: Iterable[TextLevel]) -> None:
        self.bids.apply(bids)
        self.asks.apply(asks)

    def top(self, book: OrderBook, n: int) -> tuple[list[TextLevel], list[TextLevel]]:
        """``(bids, asks)`` text of the book's best ``n`` levels, best first."""
        return (
            self.bids.top(p for p, _ in book.top_bids(n)),
            self.asks.top(p for p, _ in book.top_asks(n)),
        )

    def prune(self, book: OrderBook, depth: int, slack: int = 64) -> None:
        """After the book was truncated to ``depth``: forget the text of levels it dropped, once more than ``slack``
        of them piled up (amortized: the book is not scanned at every update)."""
        if len(self.bids) > depth + slack:
            self.bids.drop_except(p for p, _ in book.top_bids(depth))
        if len(self.asks) > depth + slack:
            self.asks.drop_except(p for p, _ in book.top_asks(depth))

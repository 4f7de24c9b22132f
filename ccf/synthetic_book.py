"""The book of one symbol of the synthetic venue (:mod:`ccf.synthetic`, whose docstring has the model): its random
stream, a sparse ladder of integer ticks and lots per side, and the sweep that moves the touch ``k`` ticks.

>>> b = SymbolBook("BTC-USDT", SymbolSpec(price=64000.0, tick=0.1, lot=0.001, size=12.0), rng_seed=1, levels=5)
>>> bids, asks = b.book()
>>> bids[0][0], asks[0][0], len(bids), len(asks), all(p < q for (p, _), (q, _) in zip(bids[1:], bids))
(64000.0, 64000.1, 5, 5, True)
>>> bid_changes: dict[int, int] = {}
>>> ask_changes: dict[int, int] = {}
>>> takers: list[tuple[int, int, bool]] = []
>>> b.sweep(30, True, 5, bid_changes, ask_changes, takers)
>>> b.book()[0][0][0], b.book()[1][0][0], takers[0][0] == 640001, all(buy for _, _, buy in takers)
(64003.0, 64003.1, True, True)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ccf.schemas import Level, format_decimal


@dataclass(frozen=True)
class SymbolSpec:
    """One symbol: start price, tick and lot, mean sizes in base units (the touch queue, a level behind it, a
    trade), mean gap between levels in ticks and mean size of one move in bps."""

    price: float = 100.0
    tick: float = 0.01
    lot: float = 0.001
    size: float = 5.0
    deep: float = 0.5
    trade: float = 0.05
    gap: float = 2.5
    jump_bps: float = 0.5


def grid(step: float) -> tuple[int, int]:
    """``(m, 10**k)`` with ``step == m / 10**k``.

    >>> grid(0.01), grid(0.5), grid(2.0)
    ((1, 100), (5, 10), (2, 1))
    """
    text = format_decimal(step)
    decimals = len(text.partition(".")[2])
    scale = 10**decimals
    return round(step * scale), scale


class SymbolBook:
    """State of one symbol: its random stream, book (ticks and lots per level from the touch outwards, ``bt``/``bq``
    for bids, ``at``/``aq`` for asks; ``bid`` is the best bid's tick), activity ``h`` and ids."""

    __slots__ = (
        "aq",
        "at",
        "bid",
        "bq",
        "bt",
        "deep",
        "gap",
        "h",
        "jump",
        "lmu",
        "mu",
        "pm",
        "ps",
        "rng",
        "sm",
        "ss",
        "symbol",
        "trade",
        "trade_id",
        "uid",
    )

    def __init__(self, symbol: str, spec: SymbolSpec, rng_seed: int, levels: int) -> None:
        self.symbol = symbol
        self.rng = random.Random(rng_seed)
        self.pm, self.ps = grid(spec.tick)
        self.sm, self.ss = grid(spec.lot)
        self.mu = max(2, round(spec.size / spec.lot))
        self.lmu = math.log(self.mu)
        self.deep = max(1.0, spec.deep / spec.lot)
        self.trade = max(1.0, spec.trade / spec.lot)
        self.gap = max(0.0, spec.gap - 1.0)
        self.jump = max(0.0, spec.jump_bps * 1e-4 * spec.price / spec.tick - 1.0)
        self.h = 1.0
        self.bid = round(spec.price / spec.tick)
        self.bt, self.bq = [self.bid], [self.fresh_touch()]
        self.at, self.aq = [self.bid + 1], [self.fresh_touch()]
        for ticks, lots, sign in ((self.bt, self.bq, -1), (self.at, self.aq, 1)):
            while len(ticks) < levels:
                ticks.append(ticks[-1] + sign * self.gap_ticks())
                lots.append(self.fresh_deep())
        self.uid = 1_000_000 + self.rng.randrange(1_000_000)
        self.trade_id = 1_000 + self.rng.randrange(1_000)

    def fresh_touch(self) -> int:
        return max(1, round(self.mu * (0.25 + self.rng.random())))

    def fresh_deep(self) -> int:
        return 1 + int(-math.log(1.0 - self.rng.random()) * self.deep)

    def gap_ticks(self) -> int:
        return 1 + int(-math.log(1.0 - self.rng.random()) * self.gap)

    def price(self, tick: int) -> float:
        return tick * self.pm / self.ps

    def size(self, lots: int) -> float:
        return lots * self.sm / self.ss

    def book(self) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        price, size = self.price, self.size
        bids = tuple((price(t), size(q)) for t, q in zip(self.bt, self.bq, strict=True))
        asks = tuple((price(t), size(q)) for t, q in zip(self.at, self.aq, strict=True))
        return bids, asks

    def sweep(
        self,
        k: int,
        up: bool,
        levels: int,
        bid_changes: dict[int, int],
        ask_changes: dict[int, int],
        takers: list[tuple[int, int, bool]],
    ) -> None:
        """Move the touch ``k`` ticks up or down: a taker (a buyer going up) sweeps the side the price moves into
        through the new touch of the other side, and each side keeps ``levels``. Changed levels go into
        ``*_changes`` (tick -> lots, 0 = removed), trades into ``takers`` as ``(tick, lots, buy)``; see
        :mod:`ccf.synthetic`."""
        if up:
            ticks, lots, other_ticks, other_lots, sign = self.at, self.aq, self.bt, self.bq, 1
            changes, other_changes = ask_changes, bid_changes
        else:
            ticks, lots, other_ticks, other_lots, sign = self.bt, self.bq, self.at, self.aq, -1
            changes, other_changes = bid_changes, ask_changes
        buy = up
        old = other_ticks[0]
        new = old + sign * k  # the other side's new touch; this side's new touch is one tick beyond
        # what is left of the touch after cancellations trades (at most the queue), deeper levels trade in full
        taken = min(lots[0], 1 + int(-math.log(1.0 - self.rng.random()) * 2.0 * self.trade))
        takers.append((ticks[0], taken, buy))
        changes[ticks.pop(0)] = 0
        lots.pop(0)
        while ticks and (ticks[0] - new) * sign <= 0:
            tick = ticks.pop(0)
            takers.append((tick, lots.pop(0), buy))
            changes[tick] = 0
        touch = new + sign
        if ticks and ticks[0] == touch:
            lots[0] += self.fresh_touch()
        else:
            ticks.insert(0, touch)
            lots.insert(0, self.fresh_touch())
        changes[touch] = lots[0]
        while len(ticks) < levels:
            tick = ticks[-1] + sign * self.gap_ticks()
            ticks.append(tick)
            lots.append(self.fresh_deep())
            changes[tick] = lots[-1]
        # the other side: its old touch is requoted to a deep size, fresh levels fill the gap to the new touch
        other_lots[0] = self.fresh_deep()
        other_changes[old] = other_lots[0]
        fill_ticks, fill_lots = [new], [self.fresh_touch()]
        tick = new - sign * self.gap_ticks()
        while (tick - old) * sign > 0 and len(fill_ticks) < levels:
            fill_ticks.append(tick)
            fill_lots.append(self.fresh_deep())
            tick -= sign * self.gap_ticks()
        for tick, size in zip(fill_ticks, fill_lots, strict=True):
            other_changes[tick] = size
        other_ticks[:0] = fill_ticks
        other_lots[:0] = fill_lots
        while len(other_ticks) > levels:
            other_changes[other_ticks.pop()] = 0
            other_lots.pop()
        self.bid += sign * k

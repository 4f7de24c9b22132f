"""A seeded, deterministic limit-order-book and trade generator that speaks :mod:`ccf.schemas` directly.

Same seed, same records: time is a simulated clock (``start_ns`` plus ``step_ns`` per step, never the wall clock),
every symbol draws from its own :class:`random.Random` seeded from ``(seed, symbol)`` (adding a symbol leaves the
others unchanged), and the whole venue pickles, so :meth:`SyntheticVenue.state` / :meth:`SyntheticVenue.from_state`
resume exactly where it stopped (Bytewax recovery relies on it).

What it imitates (``tests/unit/test_synthetic.py`` holds the defaults to bands around the real column)
    Binance USD-M BTCUSDT, 2024-07-18 23:57 → 07-19 00:05 UTC (``hftbacktest_binance_raw_ws/usdm_btcusdt_2024071*.gz``
    in the shared data, 480 one-second windows of ``ccf backtest``), against the default BTC-USDT here (seeds 1–4,
    3000 s each, the same statistics of the book top at the end of each second; mean and range)::

        statistic (1 s windows)               real BTCUSDT          synthetic BTC-USDT
        std of mid log-returns                0.47 bp               0.49 bp (0.47–0.50)
        seconds with no mid change            76 %                  77 % (75–78)
        median spread                         0.0156 bp (1 tick)    0.0156 bp (always 1 tick)
        trades per second: mean, median, p90  22.3, 8, 59           25.8, 8, 74
        mean trade size                       0.105 BTC             0.113 BTC
        median size at the touch              12.0 BTC              13.0 BTC
        kurtosis of returns                   12.5                  21 (16–24)
        autocorrelation of |r|, lags 1..10    .26 .18 .06 -.02 .08  .27 .26 .23 .20 .18
                                              .05 .03 .03 -.03 -.01 .16 .15 .14 .15 .12
        autocorrelation of r, lag 1           +0.28                 -0.01 (a random walk, see below)
        corr(imbalance, next 1 s return)      0.39                  0.06–0.10 (alpha = 0.8)

    The real spread is one tick (0.1) at every window end and in 97.7 % of bookTicker updates; the levels behind
    the touch are thin (the 5 best levels hold 13.7 BTC, the touch alone 12.0) and sparse (gaps of a few ticks); when
    the mid moves, it jumps (in the 4 % of 100 ms intervals that move it, by a median 21 ticks, rms 38). ETHUSDT
    USD-M over the same minutes: 0.58 bp, 74 % still seconds, spread 0.029 bp (1 tick of 0.01), 28 trades/s
    (median 8) of 0.79 ETH, 75 ETH at the touch, |r| autocorrelation .19 .20 .04; the default ETH-USDT gives 0.50 bp,
    77 %, 0.029 bp, 23 (median 8) of 0.80 ETH, 80 ETH, .24 .20 .20. Spot BTCUSDT (2023-04-05, 7 min, tick 0.01 at
    28 k) is quieter still: 0.27 bp, 92 % still seconds, 0.0036 bp, 7.6 trades/s. The volatility clustering here
    decays more slowly than in the capture (0.1–0.15 at lags 8–10 s, where the capture is near 0; 480 seconds do
    not pin that tail down), and the capture's momentum (lag-1 return autocorrelation) is left out on purpose:
    with ``alpha=0`` nothing predicts the direction. SOL-USDT has no capture here; its numbers are set by analogy.
    Through the features flow itself (``make run`` at speed 0, seed 7, 30 minutes of event time, the ``features``
    table): BTC-USDT 0.45 bp, 79 % still seconds, 0.0157 bp, 22.2 trades/s (median 7) of 0.112 BTC, 13.6 BTC at the
    touch, |r| autocorrelation .24 .24 .17; ETH-USDT 0.56 bp, 75 %, 0.0294 bp, 26.4 trades/s. Before this
    calibration BTC-USDT sat at 60 k with a 0.01 tick and moved one tick at a time: 0.0017 bp per second.

The book
    Prices are integer ticks on each symbol's grid; sizes are integer lots. Each side holds exactly ``levels``
    price levels, sparse like the real one: the touch queue (log-normal around the symbol's ``size``), then thin
    levels (exponential sizes of mean ``deep``) separated by geometric gaps of mean ``gap`` ticks. The spread is
    always one tick (best ask = best bid + 1 tick), so the book is never crossed. Prices and sizes become floats as
    ``n * m / 10**k`` (tick = ``m * 10**-k``), which is the float of the decimal text, so ``format_decimal`` gives
    back the venue-style string.

One step (per symbol, every ``step_ns``)
    Let ``qb``, ``qa`` be the lot sizes at the best bid and ask when the step starts (what the last ``BookTop`` showed),
    the queue imbalance ``I = (qb - qa) / (qb + qa)`` in [-1, 1], and ``h >= 1`` the symbol's activity (1 when
    quiet; long-run mean ``1 / (1 - clustering)``).

    1. Trades: ``Poisson(trades_per_step * (1 - clustering) * h)`` takers at the touch, each a buy with
       probability ``(1 + alpha*I) / 2``, each of an exponential size of mean ``trade`` (at most a quarter of the
       queue: such a fill never moves the price).
    2. The mid moves with probability ``min(0.9, move_prob * (1 - clustering) * h)``, up with probability
       ``(1 + alpha*I) / 2`` of that, by ``k`` ticks, ``k`` geometric with a mean of ``jump_bps`` of the start
       price. A taker sweeps the side it moves into: what is left of the touch after cancellations (mean two trade
       sizes) and every level up to the new touch, in full, one trade per level; a fresh touch appears one tick
       beyond. On the other side the old touch is requoted to a thin level and fresh levels fill the gap up to the
       new touch (one tick from the other); each side keeps ``levels`` (far levels are removed with size 0, or
       added).
    3. Touch queues follow a mean-reverting walk in log size ``log q <- log q + 0.05*(log size - log q) + 0.25*e``
       (``e`` uniform with variance 1, ``q >= 1`` lot), so ``I`` persists over a few seconds until a move replaces
       the touch; two levels behind the touch get a fresh size.
    4. Volatility clustering: ``h <- 1 + d * (h + x*[moved] - 1)`` with ``d`` halving the excess in 1.25 s and
       ``x`` chosen so that each move brings ``clustering`` further moves on average (a discrete Hawkes process);
       so ``move_prob`` and ``trades_per_step`` are long-run means, and ``clustering=0`` gives the same rates with
       independent |moves| (|r| autocorrelation within ±0.03).

    So ``E[mid move over one step | I, h] = tick * p_move * E[k] * alpha * I``: the imbalance at the end of one
    1 s window leads the mid return of the next window, with strength ``alpha`` (0 = a random walk whose directions
    are independent of everything before them; its move sizes still cluster). Signed trade flow leads it too,
    since takers lean the same way.

    Measured (``tests/unit/test_synthetic.py``, ETH-USDT): regressing the next 1 s mid log-return on the
    end-of-second ``I`` over 6000 s gives a correlation of about 0.06 at ``alpha=0.5``, 0.09 at the default 0.8
    (t = 6.2–7.9 over three seeds) and 0.12 at 1.0; at ``alpha=0`` the slope's t stays within ±1 over six seeds.
    Jumps and clustered activity make returns heavy-tailed, which is why the correlation is below the capture's.
    About 0.45–0.55 M records/s in pure Python (0.4–0.5 M before this calibration, same machine and load); a
    simulated second now holds about 43 records per symbol (31 before), so about 6,000 simulated seconds per second
    for two symbols (7,900 before).

Records per step and symbol: the trades (``ts_event`` spread inside the step), one :class:`BookDelta` of every
level that changed (``first_update_id = previous last_update_id + 1``, one id per changed level, like Binance
``U``/``u``) and one :class:`BookTop` (``update_id`` = the delta's ``last_update_id``). The first records are one
:class:`BookSnapshot` per symbol at ``start_ns``. ``ts_recv = ts_event + latency_ns``. Per symbol, ``ts_event``
never decreases; across symbols each step's records come symbol after symbol.

>>> v = SyntheticVenue(["BTC-USDT"], seed=1)
>>> snap = v.next_batch(1)[0]
>>> type(snap).__name__, snap.ts_event == DEFAULT_START_NS, snap.bids[0][0], snap.asks[0][0], len(snap.bids)
('BookSnapshot', True, 64000.0, 64000.1, 15)
>>> w = SyntheticVenue.from_state(v.state())
>>> v.next_batch(500) == w.next_batch(500)
True
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from ccf.schemas import BookDelta, BookSnapshot, BookTop, Level, MarketRecord, Trade
from ccf.synthetic_book import SymbolBook, SymbolSpec

__all__ = [
    "DEFAULT_SPECS",
    "DEFAULT_START_NS",
    "DEFAULT_STEP_NS",
    "SymbolSpec",
    "SyntheticVenue",
    "imbalance",
    "symbol_seed",
]

logger = logging.getLogger(__name__)

DEFAULT_START_NS: Final = 1_704_067_200_000_000_000
"""2024-01-01T00:00:00Z."""
DEFAULT_STEP_NS: Final = 100_000_000
_KAPPA: Final = 0.05
_SIGMA: Final = 0.25 * math.sqrt(3.0)  # uniform on [-a, a] has variance a**2 / 3
_HALF_LIFE_NS: Final = 1_250_000_000  # the move intensity's excess over its base halves in 1.25 s
_MAX_MOVE_PROB: Final = 0.9


DEFAULT_SPECS: Final = {
    "BTC-USDT": SymbolSpec(price=64000.0, tick=0.1, lot=0.001, size=16.0, deep=0.3, trade=0.08, jump_bps=0.55),
    "ETH-USDT": SymbolSpec(price=3400.0, tick=0.01, lot=0.001, size=100.0, deep=2.0, trade=0.65, jump_bps=0.6),
    "SOL-USDT": SymbolSpec(price=150.0, tick=0.01, lot=0.01, size=800.0, deep=40.0, trade=10.0, jump_bps=0.8),
}


def symbol_seed(seed: int, symbol: str) -> int:
    """The seed of one symbol's random stream (stable across runs and Python versions).

    >>> symbol_seed(7, "ETH-USDT") == symbol_seed(7, "ETH-USDT") != symbol_seed(8, "ETH-USDT")
    True
    """
    return int.from_bytes(hashlib.blake2b(f"{seed}:{symbol}".encode(), digest_size=8).digest(), "big")


class SyntheticVenue:
    """Deterministic multi-symbol market; see the module docstring for the model.

    ``next_batch(n)`` returns exactly ``n`` records (fewer only once ``end_ns`` is reached), generating whole steps
    and keeping the rest for the next call.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int = 7,
        *,
        start_ns: int = DEFAULT_START_NS,
        step_ns: int = DEFAULT_STEP_NS,
        alpha: float = 0.8,
        levels: int = 15,
        move_prob: float = 0.037,
        clustering: float = 0.8,
        trades_per_step: float = 2.0,
        specs: dict[str, SymbolSpec] | None = None,
        venue: str = "synthetic",
        latency_ns: int = 0,
        end_ns: int | None = None,
    ) -> None:
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be non-empty and distinct, got {list(symbols)!r}")
        if (
            not 0.0 <= alpha <= 1.0
            or not 0.0 <= move_prob <= _MAX_MOVE_PROB
            or not 0.0 <= clustering < 1.0
            or trades_per_step < 0
            or levels < 2
            or step_ns <= 0
        ):
            raise ValueError(
                f"bad parameters: alpha={alpha} move_prob={move_prob} clustering={clustering} "
                f"trades_per_step={trades_per_step} levels={levels} step_ns={step_ns}"
            )
        all_specs = {**DEFAULT_SPECS, **(specs or {})}
        self.symbols = tuple(symbols)
        self.seed, self.alpha, self.levels, self.move_prob = seed, alpha, levels, move_prob
        self.clustering, self.trades_per_step = clustering, trades_per_step
        self.step_ns, self.start_ns, self.end_ns = step_ns, start_ns, end_ns
        self.venue, self.latency_ns = venue, latency_ns
        self.now_ns = start_ns
        self.specs = {s: all_specs.get(s, SymbolSpec()) for s in self.symbols}
        self._sims = [SymbolBook(s, self.specs[s], symbol_seed(seed, s), levels) for s in self.symbols]
        # the self-exciting intensity h (1 when quiet): after a step h <- 1 + decay * (h + excite*[moved] - 1), so
        # a move brings `clustering` further moves on average and the long-run mean of h is 1 / (1 - clustering)
        self._decay = 0.5 ** (step_ns / _HALF_LIFE_NS)
        self._base = move_prob * (1.0 - clustering)
        self._trade_base = trades_per_step * (1.0 - clustering)
        self._excite = clustering * (1.0 - self._decay) / (self._base * self._decay) if self._base > 0 else 0.0
        self._pending: deque[MarketRecord] = deque(self.snapshots())

    # -- public API -----------------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once ``end_ns`` is reached and everything generated has been returned."""
        return self.end_ns is not None and self.now_ns + self.step_ns > self.end_ns and not self._pending

    def snapshot(self, symbol: str) -> BookSnapshot:
        """The full book of ``symbol`` now (what a REST depth request returns), bids best first, asks best first."""
        sim = self._sims[self.symbols.index(symbol)]
        bids, asks = sim.book()
        return BookSnapshot(
            venue=self.venue,
            symbol=symbol,
            ts_event=self.now_ns,
            ts_recv=self.now_ns + self.latency_ns,
            bids=bids,
            asks=asks,
            last_update_id=sim.uid,
        )

    def snapshots(self) -> list[BookSnapshot]:
        return [self.snapshot(s) for s in self.symbols]

    def step(self) -> list[MarketRecord]:
        """Advance the clock one step and return its records (all symbols), or ``[]`` past ``end_ns``."""
        t_prev, t = self.now_ns, self.now_ns + self.step_ns
        if self.end_ns is not None and t > self.end_ns:
            return []
        self.now_ns = t
        out: list[MarketRecord] = []
        for sim in self._sims:
            self._step_symbol(sim, t_prev, t, out)
        return out

    def next_batch(self, max_events: int = 1000) -> list[MarketRecord]:
        """Exactly ``max_events`` records (fewer only at ``end_ns``)."""
        pending = self._pending
        while len(pending) < max_events:
            records = self.step()
            if not records:
                break
            pending.extend(records)
        n = min(max_events, len(pending))
        return [pending.popleft() for _ in range(n)]

    def state(self) -> bytes:
        """Everything needed to continue exactly (immutable, so safe as a Bytewax snapshot)."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_state(cls, state: bytes) -> SyntheticVenue:
        venue = pickle.loads(state)
        if not isinstance(venue, cls):
            raise TypeError(f"not a {cls.__name__} state: {type(venue).__name__}")
        return venue

    # -- the model ------------------------------------------------------------------------------------------------

    def _step_symbol(self, sim: SymbolBook, t_prev: int, t: int, out: list[MarketRecord]) -> None:
        rng, bq, aq, alpha, h, levels = sim.rng, sim.bq, sim.aq, self.alpha, sim.h, self.levels
        rand, log = rng.random, math.log
        imb = (bq[0] - aq[0]) / (bq[0] + aq[0])
        bid_changes: dict[int, int] = {}
        ask_changes: dict[int, int] = {}
        takers: list[tuple[int, int, bool]] = []  # (price tick, lots, taker buys)
        p_buy = 0.5 * (1.0 + alpha * imb)
        # 1. Poisson(trades_per_step * (1 - clustering) * h) takers at the touch (Knuth's product of uniforms)
        floor, u = math.exp(-self._trade_base * h), rand()
        while u > floor:
            u *= rand()
            buy = rand() < p_buy
            queue = aq if buy else bq
            lots = min(queue[0] >> 2, 1 + int(-log(1.0 - rand()) * sim.trade))
            if lots >= 1:
                queue[0] -= lots
                takers.append((sim.bid + 1 if buy else sim.bid, lots, buy))
        # 2. a move of k ticks with probability min(0.9, base * h), up with (1 + alpha*I) / 2
        p_move = self._base * h
        if p_move > _MAX_MOVE_PROB:
            p_move = _MAX_MOVE_PROB
        u = rand()
        if u < p_move:
            k = 1 + int(-log(1.0 - rand()) * sim.jump)
            sim.sweep(k, u < 0.5 * p_move * (1.0 + alpha * imb), levels, bid_changes, ask_changes, takers)
            h += self._excite
        # 3. the touch queues' mean-reverting walk in log size; 4. two levels behind the touch get a fresh size
        lmu = sim.lmu
        for queue in (bq, aq):
            lq = log(queue[0])
            queue[0] = max(1, round(math.exp(lq + _KAPPA * (lmu - lq) + _SIGMA * (2.0 * rand() - 1.0))))
        bid_changes[sim.bid] = bq[0]
        ask_changes[sim.bid + 1] = aq[0]
        for _ in range(2):
            i = 1 + int(rand() * (levels - 1))
            fresh = sim.fresh_deep()
            if rand() < 0.5:
                bq[i] = fresh
                bid_changes[sim.bt[i]] = fresh
            else:
                aq[i] = fresh
                ask_changes[sim.at[i]] = fresh
        sim.h = 1.0 + self._decay * (h - 1.0)
        venue, symbol, lat, price, size = self.venue, sim.symbol, self.latency_ns, sim.price, sim.size
        gap = (t - t_prev) // (len(takers) + 1)
        for j, (tick, lots, buy) in enumerate(takers, 1):
            sim.trade_id += 1
            ts = t_prev + j * gap
            out.append(
                Trade(
                    venue=venue,
                    symbol=symbol,
                    ts_event=ts,
                    ts_recv=ts + lat,
                    price=price(tick),
                    size=size(lots),
                    side="buy" if buy else "sell",
                    trade_id=str(sim.trade_id),
                )
            )
        first = sim.uid + 1
        sim.uid += len(bid_changes) + len(ask_changes)
        out.append(
            BookDelta(
                venue=venue,
                symbol=symbol,
                ts_event=t,
                ts_recv=t + lat,
                bids=_levels(bid_changes.items(), price, size),
                asks=_levels(ask_changes.items(), price, size),
                first_update_id=first,
                last_update_id=sim.uid,
            )
        )
        out.append(
            BookTop(
                venue=venue,
                symbol=symbol,
                ts_event=t,
                ts_recv=t + lat,
                bid_price=price(sim.bid),
                bid_size=size(bq[0]),
                ask_price=price(sim.bid + 1),
                ask_size=size(aq[0]),
                update_id=sim.uid,
            )
        )


def _levels(
    changes: Iterable[tuple[int, int]], price: Callable[[int], float], size: Callable[[int], float]
) -> tuple[Level, ...]:
    return tuple((price(tick), size(lots)) for tick, lots in changes)


def imbalance(record: BookTop) -> float:
    """Top-of-book size imbalance ``(bid_size - ask_size) / (bid_size + ask_size)`` in [-1, 1].

    >>> imbalance(BookTop(venue="v", symbol="X-Y", ts_event=0, ts_recv=0, bid_price=1.0, bid_size=3.0,
    ...                   ask_price=1.01, ask_size=1.0))
    0.5
    """
    return (record.bid_size - record.ask_size) / (record.bid_size + record.ask_size)

"""Online calibration of forecast quantiles: bands that cover what they say, learnt from delayed labels.

One :class:`QuantileCalibrator` serves every forecaster that issues quantiles (the baselines, the blend, the TFT
predictor). Per key (anything hashable, e.g. ``(model, horizon)``) and quantile level ``q`` it keeps an offset
``o_q`` in units of a running residual spread ``s`` (an exponentially weighted mean of ``|y - value|``), and issues

    ``quantile_q = base_q + o_q · s``

where ``base_q`` is the model's own raw quantile when it has one (the TFT) and its point forecast otherwise. When
the label ``y`` of an issued forecast arrives (``h`` windows later), each offset takes one step of adaptive
conformal inference on the band that was *issued*:

    ``o_q += lr · (q − 1[y < issued_q])``   for ``q ≤ 0.5``,  ``o_q += lr · (q − 1[y ≤ issued_q])`` above,

so the share of labels strictly below a lower quantile tends to ``q`` and strictly above an upper one to ``1 − q``
whatever the residuals' distribution, heavy tails and ties included: on a quiet market where most returns are
exactly 0 the offsets settle where the band's edges sit at 0 as often as needed (the scorer counts
``lo ≤ y ≤ hi`` as covered; where the outer edges cross, the band issued is a point at the edge crossed further,
so it misses at one end, never at both). The spread makes the band follow volatility with O(1) work per update.
The step after ``n`` labels is ``lr · max(floor, boost / sqrt(n))``: large for the first labels so a key warms up
in about a hundred of them, shrinking to ``lr · floor`` so that on long series the offsets settle near the
pinball-optimal ones and still follow drift.

>>> cal = QuantileCalibrator((0.1, 0.9), min_labels=0)
>>> import random
>>> rnd = random.Random(1)
>>> inside = 0
>>> for i in range(4000):
...     band = cal.quantiles("k", 0.0)
...     y = rnd.gauss(0.0, 1.0)
...     inside += i >= 1000 and band["0.1"] <= y <= band["0.9"]
...     cal.update("k", y, 0.0, band)
>>> round(inside / 3000, 2)
0.8
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from statistics import NormalDist

import msgspec

from ccf.schemas import FeatureRow, Prediction

MEAN_ABS_TO_SD = math.sqrt(math.pi / 2)  # sd / mean|x| of a normal: the offsets' first guess


class _KeyState:
    """Spread, label count and offsets of one key (plain attributes: pickles, copies cheaply)."""

    __slots__ = ("first", "n", "offsets", "spread")

    def __init__(self, offsets: list[float]) -> None:
        self.n = 0
        self.spread = 0.0
        self.offsets = offsets
        self.first: list[list[float]] | None = [[] for _ in offsets]  # residuals per level until warm

    def __getstate__(self) -> tuple[int, float, list[float], list[list[float]] | None]:
        return self.n, self.spread, self.offsets, self.first

    def __setstate__(self, state: tuple[int, float, list[float], list[list[float]] | None]) -> None:
        self.n, self.spread, self.offsets, self.first = state


def _empirical(xs: list[float], q: float) -> float:
    """The ``q``-quantile of ``xs`` (the order statistic at ``q·(n−1)``, interpolated)."""
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    i = int(pos)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (pos - i) * (xs[i + 1] - xs[i])


class QuantileCalibrator:
    """Calibrated quantiles per key from a point forecast (and the model's raw quantiles, if it has any).

    ``levels``: the quantile levels issued, increasing, in (0, 1); ``lr``: the offsets' step in spread units;
    ``spread_alpha``: the weight of a new absolute residual in the spread; ``min_labels``: labels a key needs
    before it issues quantiles (``quantiles`` returns ``{}`` until then); ``boost``, ``floor``: the step schedule.
    """

    def __init__(
        self,
        levels: Sequence[float] = (0.1, 0.5, 0.9),
        lr: float = 0.05,
        spread_alpha: float = 0.05,
        min_labels: int = 30,
        boost: float = 30.0,
        floor: float = 0.3,
    ) -> None:
        if not levels or any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
            raise ValueError(f"quantile levels must be strictly increasing, each in (0, 1); got {list(levels)}")
        self.levels = tuple(float(q) for q in levels)
        self.names = tuple(str(q) for q in levels)
        self.lr, self.spread_alpha, self.min_labels, self.boost = lr, spread_alpha, min_labels, boost
        self.floor = floor
        self._upper = tuple(q > 0.5 for q in self.levels)
        self._init = [NormalDist().inv_cdf(q) * MEAN_ABS_TO_SD for q in self.levels]
        self._spec = tuple(zip(range(len(self.levels)), self.names, self.levels, self._upper, strict=True))
        self.state: dict[Hashable, _KeyState] = {}

    def quantiles(self, key: Hashable, value: float, raw: Mapping[str, float] | None = None) -> dict[str, float]:
        """The calibrated quantiles (keyed ``str(level)``) for a forecast ``value``; ``raw``: the model's own."""
        st = self.state.get(key)
        if st is None or st.n < self.min_labels:
            return {}
        s = st.spread
        if raw:
            edges = [raw.get(k, value) + o * s for k, o in zip(self.names, st.offsets, strict=True)]
        else:
            edges = [value + o * s for o in st.offsets]
        lo, hi = edges[0], edges[-1]
        if lo > hi:
            # crossed outer edges (where most labels tie with the forecast, the offsets of both edges sit near it):
            # an inverted band would miss at both ends at once; issue the band that misses at the end crossed
            # further, a point there (its edge's offset then learns the miss, the other's sees none)
            edges = [lo if lo - value > value - hi else hi] * len(edges)
        elif len(edges) > 2:
            edges = sorted(lo if e < lo else hi if e > hi else e for e in edges)
        return dict(zip(self.names, edges, strict=True))

    def update(self, key: Hashable, y: float, value: float, issued: Mapping[str, float] | None = None,
               raw: Mapping[str, float] | None = None) -> None:
        """Learn from the label ``y`` of the forecast ``value`` that was issued with quantiles ``issued``
        (``raw``: the model's own quantiles for that forecast, if it has any, as given to :meth:`quantiles`).

        The first ``min_labels`` labels of a key also start its offsets at the empirical quantiles of their
        residuals (in spread units); after that, without issued quantiles the offsets step on the band they
        would give now.
        """
        if not (math.isfinite(y) and math.isfinite(value)):
            return
        st = self.state.get(key)
        if st is None:
            st = self.state[key] = _KeyState(list(self._init))
        n = st.n = st.n + 1
        a = self.spread_alpha if n * self.spread_alpha >= 1.0 else 1.0 / n
        s = st.spread = st.spread + a * (abs(y - value) - st.spread)
        step = self.lr * self.boost / math.sqrt(n)
        if step < self.lr * self.floor:
            step = self.lr * self.floor
        offsets = st.offsets
        if st.first is not None:
            for j, name, _, _ in self._spec:
                st.first[j].append(y - (raw.get(name, value) if raw else value))
            if n >= self.min_labels:
                self._warm_start(st)
            return
        for j, name, level, upper in self._spec:
            edge = issued.get(name) if issued else None
            if edge is None:
                edge = value + offsets[j] * s
            offsets[j] += step * (level - ((y <= edge) if upper else (y < edge)))

    def _warm_start(self, st: _KeyState) -> None:
        first, st.first = st.first or [], None
        if st.spread > 0.0 and all(first):
            st.offsets = [_empirical(r, q) / st.spread for r, q in zip(first, self.levels, strict=True)]


class LabelledCalibrator:
    """A :class:`QuantileCalibrator` that finds its own labels: for a predictor that sees the feature rows and
    issues :class:`~ccf.schemas.Prediction` objects (the TFT sidecar, ``models/predict.py``).

    ``observe_row(row)`` for every feature row (it remembers the mid at each window end and learns from the
    predictions whose target window just closed); ``calibrate(p)`` for every prediction (the same prediction with
    calibrated quantiles; the model's own quantiles are the raw ones). Keys are ``(model, venue:symbol, h)``.
    Mids are kept for ``keep`` windows per symbol, as the scorer does.

    >>> from ccf.schemas import FeatureRow, Prediction
    >>> lc = LabelledCalibrator(QuantileCalibrator((0.1, 0.9), min_labels=2))
    >>> for t in range(1, 6):
    ...     lc.observe_row(FeatureRow("v", "A-B", t - 1, t, "x", True, 0, {"mid": 100.0 + (t % 2)}))
    ...     p = lc.calibrate(Prediction("tft", "3", "v", "A-B", 1, 1.0, t, t + 1, 0.0, {"0.1": -0.1, "0.9": 0.1}))
    >>> sorted(p.quantiles) == ["0.1", "0.9"], lc.calibrator.state[("tft", "v:A-B", 1)].n
    (True, 4)
    """

    def __init__(self, calibrator: QuantileCalibrator, keep: int = 4096) -> None:
        self.calibrator = calibrator
        self.keep = keep
        self.mids: dict[str, dict[int, float]] = {}
        self.pending: dict[tuple[str, int], list[tuple[Hashable, int, float, dict[str, float], dict[str, float]]]] = {}

    def observe_row(self, row: FeatureRow) -> None:
        group = f"{row.venue}:{row.symbol}"
        mids = self.mids.setdefault(group, {})
        mid = row.features.get("mid")
        end = mids[row.window_end] = mid if row.book_valid and mid is not None and mid > 0 else math.nan
        while len(mids) > self.keep:
            del mids[next(iter(mids))]
        for key, issued_at, value, raw, issued in self.pending.pop((group, row.window_end), ()):
            start = mids.get(issued_at, math.nan)
            if start > 0 and end > 0:
                self.calibrator.update(key, math.log(end / start), value, issued, raw)

    def calibrate(self, p: Prediction) -> Prediction:
        group = f"{p.venue}:{p.symbol}"
        key = (p.model, group, p.horizon_steps)
        raw = dict(p.quantiles)
        quantiles = self.calibrator.quantiles(key, p.value, raw) or raw  # the model's own until the key is warm
        self.pending.setdefault((group, p.target_time), []).append((key, p.issued_at, p.value, raw, quantiles))
        if len(self.pending) > self.keep * 4:  # targets that will never come (a symbol that stopped)
            for k in list(self.pending)[: len(self.pending) - self.keep * 4]:
                del self.pending[k]
        return msgspec.structs.replace(p, quantiles=quantiles)

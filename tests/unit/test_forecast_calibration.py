"""The online quantile calibrator: bands cover what they say on heavy tails, ties, drift and delayed labels."""

from __future__ import annotations

import math
import pickle
import random
from collections import deque
from collections.abc import Callable

import pytest
from river import time_series

from ccf.forecast.arpath import ar_path
from ccf.forecast.calibration import QuantileCalibrator


def _student3(r: random.Random) -> float:
    return r.gauss(0.0, 1.0) / math.sqrt(sum(r.gauss(0.0, 1.0) ** 2 for _ in range(3)) / 3)


def _mostly_zero(r: random.Random) -> float:  # a quiet book: 97 % of 1 s returns are exactly 0, the rest one tick
    return 0.0 if r.random() < 0.97 else r.choice((-1.0, 1.0))


def _vol_regimes(r: random.Random, i: int) -> float:  # volatility jumps tenfold every 2,000 labels
    return r.gauss(0.0, 10.0 if (i // 2000) % 2 else 1.0)


def _run(draw: Callable[[random.Random, int], float], n: int = 8_000, delay: int = 1, seed: int = 5,
         raw_width: float | None = None) -> tuple[float, float, float]:
    """Coverage, share below the 0.1 quantile and above the 0.9 one after 1,000 labels; labels ``delay`` late."""
    r = random.Random(seed)
    cal = QuantileCalibrator((0.1, 0.5, 0.9))
    pending: deque[tuple[float, dict[str, float], float]] = deque()
    ys: deque[float] = deque()
    inside = below = above = counted = 0
    for i in range(n):
        raw = {"0.1": -raw_width, "0.5": 0.0, "0.9": raw_width} if raw_width is not None else None
        band = cal.quantiles("k", 0.0, raw)
        y = draw(r, i)
        if band and i >= 1000:
            counted += 1
            inside += band["0.1"] <= y <= band["0.9"]
            below += y < band["0.1"]
            above += y > band["0.9"]
        pending.append((0.0, band, y))
        ys.append(y)
        if len(pending) >= delay:  # the label of the forecast made `delay` steps ago arrives now
            value, issued, label = pending.popleft()
            cal.update("k", label, value, issued)
    return inside / counted, below / counted, above / counted


@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("gauss", lambda r, i: r.gauss(0.0, 1.0)),
        ("student-t 3", lambda r, i: _student3(r)),
        ("97 % zeros, one tick otherwise", lambda r, i: _mostly_zero(r)),
        ("volatility regimes", _vol_regimes),
    ],
)
@pytest.mark.parametrize("delay", [1, 20])
def test_the_10_90_band_covers_80_percent(name: str, draw: Callable[[random.Random, int], float],
                                          delay: int) -> None:
    cover, below, above = _run(draw, delay=delay)
    assert 0.78 <= cover <= 0.82, (name, delay, cover)
    assert 0.08 <= below <= 0.12 and 0.08 <= above <= 0.12, (name, delay, below, above)


def test_a_too_narrow_raw_band_is_widened_to_cover() -> None:
    """A model's own quantiles (the TFT's) are corrected the same way: here a raw band of ±0.1 for N(0, 1)."""
    cover, _, _ = _run(lambda r, i: r.gauss(0.0, 1.0), raw_width=0.1)
    assert 0.78 <= cover <= 0.82


def test_deterministic_and_picklable() -> None:
    assert _run(lambda r, i: _student3(r), n=3000) == _run(lambda r, i: _student3(r), n=3000)
    cal = QuantileCalibrator()
    for i in range(100):
        cal.update(("river_lr", 5), 0.01 * (i % 7 - 3), 0.0, cal.quantiles(("river_lr", 5), 0.0))
    back = pickle.loads(pickle.dumps(cal))
    assert back.quantiles(("river_lr", 5), 0.002) == cal.quantiles(("river_lr", 5), 0.002)


def test_quantiles_wait_for_labels_and_never_cross() -> None:
    cal = QuantileCalibrator(min_labels=30)
    assert cal.quantiles("k", 0.0) == {}
    r = random.Random(2)
    for _ in range(2000):
        band = cal.quantiles("k", 0.0)
        if band:
            assert band["0.1"] <= band["0.5"] <= band["0.9"], band
        cal.update("k", _mostly_zero(r), 0.0, band)


def test_bad_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        QuantileCalibrator((0.9, 0.1))


def test_ar_path_is_snarimax_forecast() -> None:
    """river_ts's one-pass path from the fitted coefficients equals River's own forecast."""
    r = random.Random(4)
    m = time_series.SNARIMAX(p=3, d=0, q=0)
    prev = 0.0
    for i in range(3000):
        prev = 0.3 * prev + r.gauss(0.0, 1.0)
        m.learn_one(prev)
        if i in (5, 50, 2999):
            slow = m.forecast(horizon=20)
            assert ar_path(m, 20) == pytest.approx(slow, rel=1e-9, abs=1e-12)


def test_a_predictor_outside_the_engine_calibrates_its_own_predictions() -> None:
    """The TFT sidecar's hook: rows in, its predictions out with calibrated quantiles (labels found from the mids)."""
    from ccf.forecast.calibration import LabelledCalibrator
    from ccf.schemas import FeatureRow, Prediction

    r, ns, mid = random.Random(8), 1_000_000_000, 100.0
    lc = LabelledCalibrator(QuantileCalibrator((0.1, 0.5, 0.9)))
    issued: list[Prediction] = []
    mids: dict[int, float] = {}
    for i in range(6000):
        mid *= math.exp(r.gauss(0.0, 1e-4))
        row = FeatureRow("binance", "BTC-USDT", i * ns, (i + 1) * ns, "t", True, 0, {"mid": mid})
        mids[row.window_end] = mid
        lc.observe_row(row)
        raw = {"0.1": -2e-5, "0.5": 0.0, "0.9": 2e-5}  # far too narrow for a 5-window return of sd 2.2e-4
        issued.append(lc.calibrate(Prediction("tft", "7", "binance", "BTC-USDT", 5, 5.0, row.window_end,
                                               row.window_end + 5 * ns, 0.0, raw)))
    inside = [p.quantiles["0.1"] <= math.log(mids[p.target_time] / mids[p.issued_at]) <= p.quantiles["0.9"]
              for p in issued[1000:-5]]
    assert 0.77 <= sum(inside) / len(inside) <= 0.83

"""The blend: weight goes to the model with the lower recent loss; on a random walk it stays with naive."""

from __future__ import annotations

import pickle
import random
from collections import deque

from ccf.forecast.baselines import SymbolForecaster
from ccf.forecast.blend import HedgeBlend
from ccf.forecast.scoring import Scorer
from ccf.schemas import FeatureRow


def test_weights_go_to_the_better_model_with_delayed_labels() -> None:
    r = random.Random(1)
    b = HedgeBlend(("naive", "good", "noisy"), horizons=(5,))
    pending: deque[tuple[float, dict[str, float]]] = deque()
    for _ in range(3000):
        signal = r.gauss(0.0, 1.0)
        y = signal + r.gauss(0.0, 0.5)
        pending.append((y, {"naive": 0.0, "good": signal, "noisy": signal + r.gauss(0.0, 2.0)}))
        if len(pending) > 5:
            label, values = pending.popleft()
            b.update(5, label, values)
    w = b.weights(5)
    assert w["good"] > 0.9, w
    assert abs(sum(w.values()) - 1.0) < 1e-12


def _random_walk_rows(n: int, seed: int) -> list[FeatureRow]:
    r = random.Random(seed)
    mid, rows, ns = 100.0, [], 1_000_000_000
    for i in range(n):
        ret = r.gauss(0.0, 1e-4) if r.random() < 0.5 else 0.0
        mid *= 1.0 + ret
        rows.append(FeatureRow("v", "A-B", i * ns, (i + 1) * ns, "t", True, 0, {
            "mid": mid, "mid_logret": ret, "imbalance_1": r.uniform(-1, 1), "ofi": r.gauss(0, 1),
            "spread_bps": 1.0, "realized_vol": 1e-4}))
    return rows


def test_on_a_random_walk_the_blend_is_never_far_below_naive() -> None:
    """No model can beat naive on a random walk; the blend must not lose more than noise to it (skill ≥ −0.01)."""
    rows = _random_walk_rows(2000, seed=3)
    fc, sc = SymbolForecaster("v", "A-B"), Scorer("v", "A-B")
    for row in rows:
        sc.observe_mid(row.window_end, row.features["mid"] or 0.0)
        for p in fc.on_row(row):
            sc.add_prediction(p)
    scores = {(s.model, s.horizon_steps): s for s in sc.scores(0)}
    for h in fc.horizons:
        blend = scores[("blend", h)]
        assert blend.skill is not None and blend.skill >= -0.01, (h, blend.skill)
        assert blend.coverage is not None and 0.7 < blend.coverage < 0.9, (h, blend.coverage)
    assert min(scores[("ewma", h)].skill or 0.0 for h in fc.horizons) < -0.05  # there was something to avoid
    back = pickle.loads(pickle.dumps(fc))
    assert back.blend is not None and back.blend.weights(1) == fc.blend.weights(1)  # type: ignore[union-attr]

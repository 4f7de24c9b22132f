"""The ``blend`` model: the other models weighted by their recent losses (Hedge), learning with delayed labels.

Per horizon ``h``, each expert ``m`` (every other model, naive always among them) carries a discounted loss
``L_m ← γ_h·L_m + (f_m − y)² / ν`` where ``ν`` is the running mean of ``y²``: naive's own squared error, so the
loss is scale-free (the same learning rate on 1 s ETH returns and on quiet NEXO ticks) and naive's normalised
loss is about 1 per label. Weights are ``w_m ∝ prior_m · exp(−eta_h · L_m)`` and the blend forecasts
``Σ w_m f_m``. The prior puts most weight on naive, so before the labels speak the blend is close to naive (which
forecasts 0: weight off naive shrinks every other model towards zero), and a model has to earn its weight by a
lower loss. Labels ``h`` windows apart overlap (and arrive ``h`` late), so ``eta_h = eta / h`` and the memory
``1 / (1 − γ_h) = h / (1 − discount)`` labels grow with ``h``: at long horizons, where nothing beats naive by more
than noise, the weights move only on evidence that many overlapping labels cannot fake. Chosen on the real
captures (``docs/forecasts.md``): at no horizon on any of them is the blend worse than naive by more than 0.01 skill.

>>> b = HedgeBlend(("naive", "good", "bad"), horizons=(1,))
>>> for _ in range(300):
...     b.update(1, 1.0, {"naive": 0.0, "good": 0.9, "bad": -1.0})
>>> w = b.weights(1)
>>> w["good"] > 0.99, round(b.forecast(1, {"naive": 0.0, "good": 0.9, "bad": -1.0}), 2)
(True, 0.9)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


class HedgeBlend:
    """Exponentially weighted average forecaster over ``experts``, one set of weights per horizon."""

    def __init__(
        self,
        experts: Sequence[str],
        horizons: Sequence[int],
        eta: float = 0.5,
        discount: float = 0.999,
        naive_prior: float = 0.9,
        norm_alpha: float = 0.01,
    ) -> None:
        if "naive" not in experts:
            experts = ("naive", *experts)
        self.experts = tuple(experts)
        self.norm_alpha = norm_alpha
        rest = (1.0 - naive_prior) / max(len(self.experts) - 1, 1)
        self.log_prior = {m: math.log(naive_prior if m == "naive" else rest) for m in self.experts}
        self.loss: dict[int, dict[str, float]] = {h: dict.fromkeys(self.experts, 0.0) for h in horizons}
        self.norm: dict[int, float] = dict.fromkeys(horizons, 0.0)
        self.n: dict[int, int] = dict.fromkeys(horizons, 0)
        self.discount = {h: 1.0 - (1.0 - discount) / h for h in horizons}
        self.eta = {h: eta / h for h in horizons}
        self._w: dict[int, dict[str, float]] = {h: self._weights(h) for h in horizons}

    def _weights(self, h: int) -> dict[str, float]:
        loss = self.loss[h]
        eta = self.eta[h]
        logits = {m: self.log_prior[m] - eta * loss[m] for m in self.experts}
        top = max(logits.values())
        w = {m: math.exp(v - top) for m, v in logits.items()}
        total = sum(w.values())
        return {m: v / total for m, v in w.items()}

    def weights(self, h: int) -> dict[str, float]:
        """The current weights at horizon ``h`` (they sum to 1)."""
        return dict(self._w[h])

    def forecast(self, h: int, values: Mapping[str, float]) -> float:
        """The blend of the experts' forecasts ``values`` at ``h`` (a missing expert counts as naive, 0)."""
        return sum(w * values.get(m, 0.0) for m, w in self._w[h].items())

    def update(self, h: int, y: float, values: Mapping[str, float]) -> None:
        """Learn from the label ``y`` of the forecasts ``values`` the experts issued ``h`` windows ago."""
        if not math.isfinite(y):
            return
        self.n[h] += 1
        a = max(self.norm_alpha, 1.0 / self.n[h])
        self.norm[h] += a * (y * y - self.norm[h])
        nu = self.norm[h]
        if not nu > 0.0:  # nothing has moved yet: no expert can be told apart from naive
            return
        g, loss = self.discount[h], self.loss[h]
        for m in self.experts:
            e = values.get(m, 0.0) - y
            loss[m] = g * loss[m] + e * e / nu
        self._w[h] = self._weights(h)

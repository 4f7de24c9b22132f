"""The forecast path of River's SNARIMAX AR(p) (``d = q = 0``, default regressor) from its fitted coefficients.

``SNARIMAX.forecast`` rebuilds a feature dict and runs the scaler and the linear model once per step (the
``river_ts`` baseline asks for 20 steps every window, the largest cost per window). With ``d = 0`` and no MA part the
regressor is affine in the lags, so the path is ``y_t = c + Σ_j a_j y_{t-j}`` with ``a_j = w_j / sd_j`` and
``c = b − Σ_j a_j mean_j``, read from the pipeline's ``StandardScaler`` and ``LinearRegression`` once per call.
Same numbers as ``forecast`` up to float rounding (``tests/unit/test_forecast_fast.py`` checks it).

>>> from river import time_series
>>> m = time_series.SNARIMAX(p=2, d=0, q=0)
>>> for v in [0.5, -0.2, 0.1, 0.3, -0.4, 0.2] * 5:
...     m.learn_one(v)
>>> fast, slow = ar_path(m, 4), m.forecast(horizon=4)
>>> max(abs(a - b) for a, b in zip(fast, slow)) < 1e-12
True
"""

from __future__ import annotations

from typing import Any


def ar_path(model: Any, horizon: int) -> list[float]:
    """``model.forecast(horizon)`` for a River ``SNARIMAX(p, d=0, q=0)`` with its default regressor.

    Any other configuration falls back to ``model.forecast``.
    """
    if model.d or model.q or model.sp or model.sq or model.sd or len(model.regressor.steps) != 2:
        return list(model.forecast(horizon=horizon))
    scaler, lin = model.regressor.steps.values()
    means, var = scaler.means, scaler.vars
    weights = lin._weights  # River keeps the coefficients here; there is no public accessor
    c = lin.intercept
    lags = list(model.y_diff)  # most recent first
    coefs: list[float] = []
    for j in range(min(model.p, len(lags))):
        name = f"y-{j + 1}"
        v = var[name]
        a = weights.get(name, 0.0) / v**0.5 if v else 0.0
        coefs.append(a)
        if v:
            c -= a * means[name]
    path: list[float] = []
    for _ in range(horizon):
        y = c
        for a, lag in zip(coefs, lags, strict=False):
            y += a * lag
        path.append(y)
        lags.insert(0, y)
    return path

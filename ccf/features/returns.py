"""Mid log-returns between windows and their realised volatility over the last ``n`` windows.

Realised volatility here is the root mean square of the last ``n`` window log-returns (zero-mean estimator,
the usual choice at high frequency), in log-return units per window.

>>> rv = RealizedVol(n=3)
>>> [round(rv.update(r).get(), 6) for r in (0.01, -0.01, 0.02, 0.0)]
[0.01, 0.01, 0.014142, 0.01291]
"""

from __future__ import annotations

import math
from collections import deque


class RealizedVol:
    """Rolling RMS of the last ``n`` returns; NaN until the first."""

    __slots__ = ("_buf", "n")

    def __init__(self, n: int = 20) -> None:
        self.n = n
        self._buf: deque[float] = deque(maxlen=n)

    def update(self, r: float) -> RealizedVol:
        if r != r:  # NaN return (no mid): does not enter the window
            return self
        self._buf.append(r)
        return self

    def get(self) -> float:
        k = len(self._buf)
        if k == 0:
            return math.nan
        # summed afresh (n is small): no running sum to drift
        return math.sqrt(sum(x * x for x in self._buf) / k)

    def __getstate__(self) -> tuple[int, list[float]]:
        return (self.n, list(self._buf))

    def __setstate__(self, state: tuple[int, list[float]]) -> None:
        self.n = state[0]
        self._buf = deque(state[1], maxlen=self.n)


def log_return(prev_mid: float, mid: float) -> float:
    """``log(mid / prev_mid)``; NaN when either is missing or not positive.

    >>> round(log_return(100.0, 101.0), 8), log_return(float("nan"), 1.0)
    (0.00995033, nan)
    """
    if prev_mid > 0 and mid > 0:
        return math.log(mid / prev_mid)
    return math.nan

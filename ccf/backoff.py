"""Capped, jittered exponential backoff: the one delay rule of every retry in CCF (websockets, REST, stores).

>>> import random
>>> [backoff_delay(n, 0.5, 30.0, random.Random(1)) <= min(30.0, 0.5 * 2 ** (n - 1)) for n in (1, 5, 20)]
[True, True, True]
>>> backoff_delay(3, 0.5, 30.0, random.Random(1)) >= 1.0  # never below half the capped exponential
True
"""

from __future__ import annotations

import random


def backoff_delay(failures: int, initial: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failures: uniform in the upper half of the capped exponential."""
    full = min(cap, initial * 2.0 ** min(failures - 1, 60))
    return full / 2.0 + rng.random() * full / 2.0

"""REST book snapshots fetched in background threads, so the Bytewax source never waits for one.

:meth:`SnapshotFetcher.request` queues a symbol (at most one request per symbol waits or runs at a time), with a
capped, jittered backoff that grows with each consecutive request for the same symbol until
:meth:`SnapshotFetcher.succeeded` resets it; :meth:`SnapshotFetcher.ready` starts what is due and returns what has
arrived, without blocking. A fetch that fails after its own retries (:class:`~ccf.errors.ConnectionFailedError`)
comes back as a :class:`Fetched` with ``error`` set; anything else it raises is a bug and is raised again here.

>>> f = SnapshotFetcher(lambda url: (7, b"{}"))
>>> f.request("ETH-USDT", "http://x/depth?symbol=ETHUSDT")
0.0
>>> f.request("ETH-USDT", "http://x/depth?symbol=ETHUSDT") is None  # already waiting
True
>>> import time; got = []
>>> while not got: got = f.ready(); time.sleep(0.01)
>>> got
[Fetched(symbol='ETH-USDT', url='http://x/depth?symbol=ETHUSDT', ts_recv=7, body=b'{}', error='')]
>>> f.close()
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from ccf.errors import ConnectionFailedError
from ccf.wsource import backoff_delay

logger = logging.getLogger(__name__)

FetchFn = Callable[[str], tuple[int, bytes]]
"""URL -> ``(ts_recv ns, body)``; raises :class:`ConnectionFailedError` when it gives up."""


class Fetched(NamedTuple):
    """A finished snapshot request: the body and its receipt time, or the error."""

    symbol: str
    url: str
    ts_recv: int
    body: bytes | None
    error: str = ""


class SnapshotFetcher:
    """At most one snapshot request per symbol, fetched on ``workers`` threads (started on first use)."""

    def __init__(self, fetch: FetchFn, *, workers: int = 2, backoff_initial_s: float = 0.1,
                 backoff_max_s: float = 5.0, rng: random.Random | None = None) -> None:
        self._fetch = fetch
        self._workers = workers
        self._initial = backoff_initial_s
        self._cap = backoff_max_s
        self._rng = rng or random.Random()
        self._pool: ThreadPoolExecutor | None = None
        self._waiting: dict[str, tuple[str, float]] = {}
        self._running: dict[str, tuple[str, Future[tuple[int, bytes]]]] = {}
        self._tries: dict[str, int] = {}

    @property
    def busy(self) -> bool:
        """Whether any request waits or runs."""
        return bool(self._waiting or self._running)

    def pending(self, symbol: str) -> bool:
        return symbol in self._waiting or symbol in self._running

    def request(self, symbol: str, url: str) -> float | None:
        """Queue a snapshot of ``symbol``; returns the delay before it starts (``None``: one is already queued)."""
        if self.pending(symbol):
            return None
        tries = self._tries.get(symbol, 0)
        delay = 0.0 if tries == 0 else backoff_delay(tries, self._initial, self._cap, self._rng)
        self._tries[symbol] = tries + 1
        self._waiting[symbol] = (url, time.monotonic() + delay)
        return delay

    def succeeded(self, symbol: str) -> None:
        """The symbol's book is in sync again: its next request starts without delay."""
        self._tries.pop(symbol, None)

    def ready(self) -> list[Fetched]:
        """Start the requests that are due; return the ones that finished (never blocks)."""
        if self._waiting:
            now = time.monotonic()
            for symbol, (url, due) in list(self._waiting.items()):
                if due <= now:
                    del self._waiting[symbol]
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ccf-snapshot")
                    self._running[symbol] = (url, self._pool.submit(self._fetch, url))
        done: list[Fetched] = []
        for symbol, (url, future) in list(self._running.items()):
            if not future.done():
                continue
            del self._running[symbol]
            try:
                ts, body = future.result()
            except ConnectionFailedError as exc:
                logger.warning("snapshot of %s failed: %s", symbol, exc)
                done.append(Fetched(symbol, url, time.time_ns(), None, str(exc)))
                continue
            done.append(Fetched(symbol, url, ts, body))
        return done

    def close(self) -> None:
        """Drop what waits; a fetch already running finishes in its thread, unobserved."""
        self._waiting.clear()
        self._running.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

"""REST requests of the websocket source (e.g. a venue's depth snapshot per session), with capped, jittered retries.

Re-exported by :mod:`ccf.wsource`, which fetches a connection's ``rest_urls`` with :func:`fetch_rest`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Final

import aiohttp

from ccf.backoff import backoff_delay
from ccf.errors import ConnectionFailedError

logger = logging.getLogger(__name__)

_RETRY_STATUS: Final = frozenset({418, 429, 500, 502, 503, 504})


async def fetch_rest(
    url: str,
    *,
    session: aiohttp.ClientSession | None = None,
    tries: int = 3,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 5.0,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    """GET ``url`` with retries; returns ``(ts_recv ns, body)``. Retries connection errors, timeouts, 5xx and rate
    limits (429/418, honouring ``Retry-After`` up to ``backoff_max_s``); raises :class:`ConnectionFailedError` after
    ``tries`` or at once on another 4xx."""
    own = session is None
    sess = session or aiohttp.ClientSession()
    rng = random.Random()
    try:
        for attempt in range(1, tries + 1):
            wait = backoff_delay(attempt, backoff_initial_s, backoff_max_s, rng)
            try:
                async with sess.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                    body = await resp.read()
                    ts = time.time_ns()
                    if resp.status == 200:
                        return ts, body
                    problem = f"HTTP {resp.status}: {body[:200]!r}"
                    if resp.status not in _RETRY_STATUS:
                        raise ConnectionFailedError(f"GET {url}: {problem} (not retried)")
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        wait = min(backoff_max_s, float(retry_after))
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            logger.warning("GET %s failed (try %d/%d): %s", url, attempt, tries, problem)
            if attempt < tries:
                await asyncio.sleep(wait)
        raise ConnectionFailedError(f"GET {url}: failed {tries} times, last: {problem}")
    finally:
        if own:
            await sess.close()


def fetch_rest_sync(url: str, **kwargs: Any) -> tuple[int, bytes]:
    """:func:`fetch_rest` for code outside an event loop."""
    return asyncio.run(fetch_rest(url, **kwargs))

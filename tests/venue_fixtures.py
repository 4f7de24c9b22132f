"""Fixtures for a local Binance-protocol venue server (import them into a conftest or a test module).

* ``venue_server_factory(**ServerConfig fields)``: starts a :class:`ccf.venue_server.runner.ServerThread` on a free
  loopback port (default ``speed=0``: as fast as the client reads) and stops every one it started at teardown.
* ``venue_server``: a synthetic BTC-USDT + ETH-USDT market, seed 7, flat out.

The returned object has ``base_url`` (REST, control), ``ws_url``, ``stream_url(streams, faults=())``, ``stats()``
and ``server`` (the :class:`~ccf.venue_server.server.VenueServer`). :func:`post_faults` and :func:`get_stats` go
through the HTTP control endpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ccf.venue_server.runner import ServerThread
from ccf.venue_server.server import ServerConfig


@pytest.fixture
def venue_server_factory() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(**fields: Any) -> ServerThread:
        fields.setdefault("speed", 0.0)
        server = ServerThread(ServerConfig(**fields)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def venue_server(venue_server_factory: Callable[..., ServerThread]) -> ServerThread:
    return venue_server_factory(mode="synthetic", symbols=("BTC-USDT", "ETH-USDT"), seed=7)


def post_faults(server: ServerThread, *faults: str | dict[str, Any], conn: int | None = None) -> dict[str, Any]:
    """``POST /control/faults``; returns the answer (``accepted``, ``connections``)."""
    body: dict[str, Any] = {"faults": list(faults)}
    if conn is not None:
        body["conn"] = conn
    resp = httpx.post(f"{server.base_url}/control/faults", json=body, timeout=5)
    resp.raise_for_status()
    result: dict[str, Any] = resp.json()
    return result


def get_stats(server: ServerThread) -> dict[str, Any]:
    """``GET /control/stats``."""
    resp = httpx.get(f"{server.base_url}/control/stats", timeout=5)
    resp.raise_for_status()
    result: dict[str, Any] = resp.json()
    return result

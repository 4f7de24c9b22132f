"""The features flow on a live venue in process: the local Binance-protocol server over real websockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bytewax.testing import TestingSink, run_main

from ccf.settings import Settings
from ccf.venue_server.runner import ServerThread
from flows.features import build_flow
from tests.venue_fixtures import venue_server_factory  # noqa: F401  # the fixture

pytestmark = pytest.mark.e2e


def test_features_from_a_live_websocket_venue_in_process(
    venue_server_factory: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Any,
) -> None:
    server = venue_server_factory(mode="synthetic", symbols=("BTC-USDT", "ETH-USDT"), seed=3, speed=20.0)
    settings = Settings(
        stop_after=4,  # seconds of receipt time for a live feed: about 80 s of the server's market at 20x
        venues={"source": "binance", "symbols": ["BTC-USDT", "ETH-USDT"], "ws_url": server.ws_url,
                "rest_url": server.base_url, "channels": ["depth", "trade"]},
        store={"path": tmp_path / "unused.duckdb"},
    )
    out: list[tuple[str, Any]] = []
    run_main(build_flow(settings, sink=TestingSink(out)))
    rows = [r for _, o in out for r in o.rows]
    by_symbol = {s: [r for r in rows if r.symbol == s] for s in ("BTC-USDT", "ETH-USDT")}
    for symbol, srows in by_symbol.items():
        assert len(srows) >= 20, symbol
        starts = [r.window_start for r in srows]
        assert starts == sorted(set(starts))  # one row per window, in order
        valid = [r for r in srows if r.book_valid]
        assert len(valid) >= len(srows) - 2  # whole from the first snapshot on
        assert all(r.features["spread"] > 0 for r in valid)  # never crossed
        assert sum(r.features["trade_count"] for r in srows) > 0
    assert {r.venue for r in rows} == {"binance"}
    assert any(o.predictions for _, o in out)
    health = [p for _, o in out for p in o.problems]
    assert any(p.get("error") in ("connected", "subscribed", "snapshot") for p in health), health[:5]

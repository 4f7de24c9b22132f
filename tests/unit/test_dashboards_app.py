"""The app's page from a snapshot: gaps break the line, bps with digits, the legend off the data, the TFT's
promotion, health by group, news with sentiment, and who may be served."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from bokeh.models import Legend

from ccf.errors import ConfigError
from ccf.settings import AppSettings, Settings
from dashboards import panels
from dashboards.app import LiveView, check_exposure, websocket_origins
from dashboards.data import Snapshot

S = 1_000_000_000
T0 = 1_704_067_200 * S


def _row(i: int) -> dict[str, Any]:
    return {"window_start": T0 + i * S, "window_end": T0 + (i + 1) * S, "venue": "v", "symbol": "A", "mid": 100.0 + i,
            "book_valid": True, "epoch": 0}


def _score(model: str, mae: float) -> dict[str, Any]:
    return {"venue": "v", "symbol": "A", "model": model, "horizon_steps": 1, "n": 10, "mae": mae, "rmse": mae * 1.5,
            "pinball": mae / 3, "hit_rate": 0.5, "coverage": 0.8, "skill": 0.01}


def _snapshot() -> Snapshot:
    rows = tuple(_row(i) for i in (*range(5), *range(8, 10)))  # windows 5, 6 and 7 are not in the store
    pred = {"issued_at": T0 + 9 * S, "target_time": T0 + 10 * S, "venue": "v", "symbol": "A", "model": "tft",
            "model_version": "3", "horizon_steps": 1, "value": 0.0, "q10": -0.001, "q90": 0.001}
    health = [{"venue": "v", "symbol": "", "kind": "disconnected", "n": 2.0, "last": 1.0, "last_ts": T0},
              {"venue": "v", "symbol": "", "kind": "stalled", "n": 1.0, "last": 1.0, "last_ts": T0 + S},
              {"venue": "v", "symbol": "A", "kind": "SequenceGapError", "n": 4.0, "last": 1.0, "last_ts": T0},
              {"venue": "v", "symbol": "A", "kind": "ParseError", "n": 1.0, "last": 1.0, "last_ts": T0},
              {"venue": "kafka", "symbol": "ccf.book:0", "kind": "consumer_lag", "n": 99.0, "last": 7.0, "last_ts": T0},
              {"venue": "kafka", "symbol": "ccf.trades:0", "kind": "consumer_lag", "n": 9.0, "last": 3.0,
               "last_ts": T0}]
    news = [{"fetched": T0, "id": "1", "feed": "coindesk", "title": "Bitcoin rallies", "link": "https://x.org/1",
             "sentiment": 0.6, "bases": "BTC"},
            {"fetched": T0 - S, "id": "2", "feed": "decrypt", "title": "Ether slips", "link": "", "sentiment": -0.2,
             "bases": "ETH"}]
    return Snapshot(version=1, where="test", polled_at=1.0, features={"v:A": rows},
                    predictions={("v:A", "tft", 1): (pred,)}, health=tuple(health), news=tuple(news),
                    scores=(_score("tft", 0.00005123), _score("naive", 0.00005131)), promotion={"3": "not promoted"})


def test_the_page_from_a_snapshot(tmp_path: Path) -> None:
    view = LiveView(Settings(store={"path": tmp_path / "store.duckdb"}, forecast={"horizons": [1]}))
    view.poller._snap = _snapshot()
    view.model.options = ["naive", "tft"]
    view.model.value, view.horizon.value = "tft", 1
    view.refresh(force=True)
    mids = view.mid_src.data["mid"]
    assert len(mids) == 8 and math.isnan(mids[5]) and not any(math.isnan(m) for m in (*mids[:5], *mids[6:]))
    assert view.mid_src.data["t"][5] == (T0 + 6 * S) / 1e6  # the line breaks right after the last window before
    assert any(isinstance(x, Legend) for x in view.price_fig.below) and not view.price_fig.center[2:]
    board = view.leaderboard.object
    assert "tft v3 (not promoted)" in board and "MAE (bps)" in board
    assert "0.5123" in board and "0.5131" in board  # four significant digits tell the models apart
    assert "tft v3 (not promoted) forecasts" in view.price_fig.title.text
    health = view.health.object
    assert "reconnects</td><td>3 (disconnected 2, stalled 1)" in health
    assert "resyncs</td><td>4 (SequenceGapError 4)" in health and "dead letters</td><td>1 (ParseError 1)" in health
    assert "consumer lag</td><td>10 messages (2 partitions)" in health
    assert "windows v:A</td><td>7 buffered, 3 missing" in health
    news = view.news.object
    assert "Bitcoin rallies" in news and "+0.60" in news and "−0.20" not in news and "-0.20" in news
    assert 'id="ccf-news-mean">+0.20' in news


def test_bps_keep_four_significant_digits() -> None:
    assert [panels.fmt_bps(v) for v in (0.000001234, 0.00012345, 0.0123456)] == ["0.01234", "1.234", "123.5"]


@pytest.mark.parametrize(("host", "password", "why"), [
    ("0.0.0.0", None, "CCF_APP__HOST=0.0.0.0"),
    ("192.168.1.5", "", "CCF_APP__BASIC_AUTH_PASSWORD"),
    ("127.0.0.1", "change-me", "CCF_APP__BASIC_AUTH_PASSWORD is still 'change-me'"),
    ("0.0.0.0", " Change-Me ", "CCF_APP__BASIC_AUTH_PASSWORD is still 'change-me'"),
])
def test_the_app_refuses_to_be_exposed(host: str, password: str | None, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        check_exposure(AppSettings(host=host, basic_auth_password=password))
    assert "\n" not in str(err.value)


def test_who_may_be_served() -> None:
    check_exposure(AppSettings(host="127.0.0.1"))
    check_exposure(AppSettings(host="0.0.0.0", basic_auth_user="ccf", basic_auth_password="s3cret"))
    assert "*" not in websocket_origins(AppSettings(host="0.0.0.0", port=5006))
    assert websocket_origins(AppSettings(host="0.0.0.0", port=5006))[0] == "127.0.0.1:5006"
    assert websocket_origins(AppSettings(host="10.0.0.2", port=80)) == ["10.0.0.2:80"]

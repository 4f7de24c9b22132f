"""The online baselines on the synthetic venue: the linear model finds the generator's predictable component."""

from __future__ import annotations

from ccf.engine import EngineConfig, SymbolEngine
from ccf.features.bookkeeper import SyncedBook
from ccf.forecast.baselines import SymbolForecaster
from ccf.synthetic import SyntheticVenue


def _scores(alpha: float, seconds: int = 1500) -> dict[tuple[str, int], object]:
    venue = SyntheticVenue(["ETH-USDT"], seed=11, alpha=alpha)
    eng = SymbolEngine("synthetic", "ETH-USDT", SyncedBook("synthetic", "ETH-USDT"), EngineConfig(horizons=(1, 5)))
    end = None
    while True:
        batch = venue.next_batch(5000)
        if not batch:
            break
        eng.on_batch(batch)
        if end is None:
            end = batch[0].ts_event + seconds * 1_000_000_000
        if batch[-1].ts_event >= end:
            break
    eng.on_eof()
    return {(s.model, s.horizon_steps): s for s in eng.scorer.scores(0)}


def test_river_lr_finds_the_predictable_component_and_naive_is_the_reference() -> None:
    # the strongest planted signal: in the market calibrated to a real capture, heavy-tailed moves leave the
    # default alpha=0.8 a correlation of ~0.09 with the next second, which 1500 s cannot tell from noise
    scores = _scores(alpha=1.0)
    lr = scores[("river_lr", 1)]
    assert lr.n > 1400
    assert lr.skill is not None and lr.skill > 0.0, lr
    assert lr.hit_rate is not None and lr.hit_rate > 0.55, lr
    assert scores[("naive", 1)].skill == 0.0


def test_without_a_predictable_component_no_skill_appears() -> None:
    scores = _scores(alpha=0.0)
    assert scores[("river_lr", 1)].skill is not None and scores[("river_lr", 1)].skill < 0.02


def test_unknown_model_is_refused_with_the_known_ones() -> None:
    import pytest

    with pytest.raises(ValueError, match="river_lr"):
        SymbolForecaster("v", "s", models=("prophet",))

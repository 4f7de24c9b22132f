"""What the pipeline must write: ``ccf backtest`` over the same capture files with the same (default) settings.

:func:`reference` runs the backtest's own pieces (:func:`ccf.capture.readers.read_records` with the capture's
extras, :class:`ccf.sources.RecordSource` flat out, :func:`flows.features.build_flow`, :class:`ccf.backtest.CollectSink`)
and keeps every output: ``ccf backtest`` writes only the last score of each model, QuestDB gets one per window.
Its features and predictions are the ones ``ccf backtest`` writes to Parquet (:func:`check_against_cli` checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccf.settings import Settings
from ccf.store.tables import (
    SCORES,
    feature_row_values,
    features_table,
    prediction_values,
    predictions_table,
    score_values,
)

KEYS = {
    "features": features_table().keys,
    "predictions": predictions_table().keys,
    "scores": SCORES.keys,
}
TIME_KEY = {"features": "window_start", "predictions": "issued_at", "scores": "window_end"}


@dataclass(frozen=True)
class Reference:
    rows: dict[str, list[dict[str, Any]]]
    """Table name -> rows as the sinks write them (timestamps int ns)."""
    last_event_ns: int
    """Newest venue time among the capture's trades and depth updates."""
    records: int


def default_settings() -> Settings:
    """The settings the flows run with here: defaults, nothing from the environment."""
    return Settings(_env_prefix="CCF_FAULTS_NO_ENV_")  # type: ignore[call-arg]  # pydantic-settings


def reference(files: Sequence[Path], settings: Settings | None = None) -> Reference:
    from bytewax.testing import run_main

    from ccf.backtest import CollectSink
    from ccf.capture.readers import read_records
    from ccf.schemas import BookDelta, Trade
    from ccf.sources import RecordSource
    from flows.features import build_flow

    settings = settings or default_settings()
    records = list(read_records(list(files), with_extra=True))
    last = max(int(r.ts_event) for r in (x[0] if type(x) is tuple else x for x in records)
               if isinstance(r, Trade | BookDelta))
    sink = CollectSink()
    source = RecordSource({"backtest": lambda: iter(records)}, stop_after_s=settings.stop_after, pace=0.0)
    run_main(build_flow(settings, source=source, sink=sink))  # type: ignore[no-untyped-call]
    q = settings.forecast.quantiles
    rows = {
        "features": [feature_row_values(r) for o in sink.outs for r in o.rows],
        "predictions": [prediction_values(p, q) for o in sink.outs for p in o.predictions],
        "scores": [score_values(s) for o in sink.outs for s in o.scores],
    }
    return Reference(rows, last, len(records))


def check_against_cli(ref: Reference, out_dir: Path) -> dict[str, bool]:
    """Whether ``ccf backtest --out out_dir`` wrote the same features and predictions (as sets of rows)."""
    import pyarrow.parquet as pq

    same = {}
    for name in ("features", "predictions"):
        cli = pq.read_table(out_dir / f"{name}.parquet").to_pylist()
        same[name] = _canon(cli) == _canon(ref.rows[name])
    return same


def _canon(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted((k, "nan" if v != v else v) for k, v in r.items())) for r in rows)

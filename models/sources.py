"""Feature rows for training: from capture files through the very same engine, or from the store.

Files go through :class:`ccf.engine.SymbolEngine` (one per ``venue:SYMBOL``, books kept by
:class:`ccf.features.bookkeeper.SyncedBook`), as ``flows.features`` and ``ccf backtest`` run it; Binance kline CSVs
switch to kline mode (one window per bar), as ``ccf backtest`` does. The store is QuestDB when it is configured,
else the embedded DuckDB file; both hold the ``features`` table of :mod:`ccf.store.tables`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from ccf.engine import EngineConfig, SymbolEngine
from ccf.schemas import FeatureRow
from ccf.settings import Settings
from models.dataset import META_COLUMNS

logger = logging.getLogger(__name__)


def engine_config(settings: Settings, paths: Sequence[Path]) -> EngineConfig:
    """The features engine's config for these files, no baselines (kline mode for Binance kline CSVs)."""
    from ccf.capture.readers import Format, detect_format

    if paths and all(detect_format(p) is Format.BINANCE_KLINE_CSV for p in paths):
        kline = settings.features.model_copy(update={"mode": "kline", "window_s": 60.0})
        settings = settings.model_copy(update={"features": kline})
    return replace(EngineConfig.from_settings(settings), models=())


class FeatureEngines:
    """Records in (any order across symbols, time order within one), feature rows out; state kept between calls."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.engines: dict[str, SymbolEngine] = {}
        self.skipped = 0

    def rows(self, records: Iterable[Any], chunk: int = 5000) -> Iterator[FeatureRow]:
        from ccf.features.bookkeeper import SyncedBook
        from ccf.sources import DLQ_KEY, chunk_by_key

        buf: list[Any] = []

        def drain() -> Iterator[FeatureRow]:
            for key, recs in chunk_by_key(buf):
                if key == DLQ_KEY or key == "news:ALL":
                    self.skipped += len(recs)
                    continue
                eng = self.engines.get(key)
                if eng is None:
                    venue, _, symbol = key.partition(":")
                    eng = self.engines[key] = SymbolEngine(venue, symbol, SyncedBook(venue, symbol), self.config)
                yield from eng.on_batch(recs).rows
            buf.clear()

        for rec in records:
            buf.append(rec)
            if len(buf) >= chunk:
                yield from drain()
        yield from drain()

    def flush(self) -> list[FeatureRow]:
        return [r for eng in self.engines.values() for r in eng.on_eof().rows]


def rows_from_files(paths: Sequence[Path], settings: Settings, engines: FeatureEngines | None = None) -> list[FeatureRow]:
    """Feature rows of capture files (merged by receipt time); pass ``engines`` to continue another call's state."""
    from ccf.capture.readers import read_records

    engines = engines or FeatureEngines(engine_config(settings, paths))
    rows = list(engines.rows(read_records(list(paths), with_extra=True)))
    if engines.skipped:
        logger.info("%d records without a symbol (parse errors, raw frames) skipped", engines.skipped)
    return rows


def frame_to_rows(frame: pd.DataFrame) -> list[FeatureRow]:
    """The inverse of :func:`models.dataset.rows_to_frame` (NaN stays NaN)."""
    feats = [c for c in frame.columns if c not in META_COLUMNS and c != "epoch"]
    values = frame[feats].to_numpy(dtype=float)
    out = []
    for i, (venue, symbol, ws, we, fs, valid) in enumerate(frame[list(META_COLUMNS)].itertuples(index=False)):
        out.append(FeatureRow(str(venue), str(symbol), int(ws), int(we), str(fs), bool(valid), 0,
                              {k: float(v) for k, v in zip(feats, values[i], strict=True)}))
    return out


def _where(start_ns: int | None, end_ns: int | None, symbols: Sequence[str] | None, ts: str) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if start_ns is not None:
        clauses.append(f"{ts} >= ?")
        params.append(start_ns)
    if end_ns is not None:
        clauses.append(f"{ts} < ?")
        params.append(end_ns)
    if symbols:
        clauses.append("(" + " OR ".join("(venue = ? AND symbol = ?)" for _ in symbols) + ")")
        for s in symbols:
            venue, _, symbol = s.partition(":")
            params += [venue, symbol]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def frame_from_duckdb(path: Path, start_ns: int | None, end_ns: int | None, symbols: Sequence[str] | None) -> pd.DataFrame:
    import duckdb

    where, params = _where(start_ns, end_ns, symbols, "window_start")
    con = duckdb.connect(str(path), read_only=True)
    try:
        frame: pd.DataFrame = con.execute(
            f'SELECT * FROM "features"{where} ORDER BY venue, symbol, window_start', params).df()
    finally:
        con.close()
    return _normalise(frame)


def frame_from_questdb(settings: Settings, start_ns: int | None, end_ns: int | None,
                       symbols: Sequence[str] | None) -> pd.DataFrame:
    """QuestDB's CSV export (``/exp``) of the features table; timestamps come back as µs ISO text."""
    import httpx

    table = settings.questdb.table_prefix + "features"

    def lit(v: Any) -> str:
        if isinstance(v, int):
            return f"CAST({v // 1000} AS TIMESTAMP)"  # QuestDB timestamps are µs
        return "'" + str(v).replace("'", "''") + "'"

    where, params = _where(start_ns, end_ns, symbols, "window_start")
    for p in params:
        where = where.replace("?", lit(p), 1)
    sql = f'SELECT * FROM "{table}"{where} ORDER BY window_start'
    resp = httpx.get(f"{settings.questdb.http_url.rstrip('/')}/exp", params={"query": sql}, timeout=120)
    resp.raise_for_status()
    frame = pd.read_csv(io.StringIO(resp.text))
    for c in ("window_start", "window_end"):
        frame[c] = pd.to_datetime(frame[c], utc=True).astype("datetime64[ns, UTC]").astype("int64")
    frame = frame.sort_values(["venue", "symbol", "window_start"], kind="stable")
    return _normalise(frame)


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in ("epoch",) if c in frame.columns]).reset_index(drop=True)
    for c in frame.columns:
        if c not in META_COLUMNS:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    frame["book_valid"] = frame["book_valid"].astype(str).str.lower().isin(["true", "1"])
    # columns that are NaN throughout belong to the other feature set (book rows have no "close", ...)
    return frame[[c for c in frame.columns if c in META_COLUMNS or frame[c].notna().any()]]


def frame_from_store(settings: Settings, start_ns: int | None = None, end_ns: int | None = None,
                     symbols: Sequence[str] | None = None) -> pd.DataFrame:
    if settings.questdb.enabled:
        return frame_from_questdb(settings, start_ns, end_ns, symbols)
    return frame_from_duckdb(settings.store.path, start_ns, end_ns, symbols)

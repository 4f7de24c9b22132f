"""``ccf backtest``: the features flow over capture files, as fast as the machine goes.

The very same :func:`flows.features.build_flow` runs (one worker, in process), fed by a :class:`RecordSource` over
the files and drained into Parquet: ``features.parquet`` (``venue, symbol, window_start, window_end`` as int ns,
then every feature by name), ``predictions.parquet``, ``scores.parquet`` (one row per model × horizon × symbol
over the whole run), ``summary.json`` (with ``skipped``: what was not used, by reason) and ``report.html`` /
``report.md`` (the scores per symbol and horizon in bps, skill and band coverage figures). With a terminal
attached, a bar counts the records read (:mod:`ccf.progress`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from ccf.engine import EngineOut
from ccf.progress import Progress, progress
from ccf.settings import Settings
from ccf.store.tables import feature_row_values, prediction_values, score_values

logger = logging.getLogger(__name__)


class _Collect(StatelessSinkPartition[Any]):
    def __init__(self, into: list[EngineOut]) -> None:
        self.into = into

    def write_batch(self, items: list[Any]) -> None:
        self.into.extend(out for _, out in items)


class CollectSink(DynamicSink[Any]):
    """Keeps every :class:`EngineOut` in memory (a backtest's outputs are small next to its inputs)."""

    def __init__(self) -> None:
        self.outs: list[EngineOut] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Collect:
        return _Collect(self.outs)


class _Counted:
    """Counts the records an iterator yields (for the summary's msgs/s), and advances a progress bar."""

    def __init__(self, it: Iterator[Any], bar: Progress | None = None) -> None:
        self.it = it
        self.n = 0
        self.kinds: dict[str, int] = {}
        self.bar = bar

    def __iter__(self) -> Iterator[Any]:
        step = 0
        for rec in self.it:
            self.n += 1
            kind = type(rec[0] if type(rec) is tuple else rec).__name__
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if self.bar is not None and self.n - step >= 10_000:
                self.bar.advance(self.n - step)
                step = self.n
            yield rec
        if self.bar is not None:
            self.bar.advance(self.n - step)

    def why_empty(self) -> str:
        """Why records gave no feature window, in words."""
        if self.n == 0:
            return "the files hold no record"
        parsed = {k: v for k, v in self.kinds.items() if not k.endswith("Error") and k != "RawFrame"}
        if not parsed:
            return f"none of its {self.n} items is a record CCF parses ({', '.join(sorted(self.kinds))})"
        if not any(k in parsed for k in ("BookSnapshot", "Kline", "BookTop")):
            return "the capture has no book snapshot, so no book ever starts (" + ", ".join(
                f"{v} {k}" for k, v in sorted(parsed.items())) + ")"
        return "its records span less than one window"


def run_backtest(
    inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    models: Sequence[str] | None = None,
    fmt: str = "auto",
) -> dict[str, Any]:
    """Run the features flow over ``inputs`` and write the result files to ``out_dir``; returns the summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ccf.capture.readers import read_records
    from ccf.entry import run_dataflow
    from ccf.sources import RecordSource
    from flows.features import build_flow

    if models is not None:
        settings = settings.model_copy(update={"forecast": settings.forecast.model_copy(update={"models": list(models)})})
    if fmt != "auto":
        from ccf.capture.readers import Format, detect_format

        wanted = Format(fmt)  # ValueError names an unknown format
        for path in inputs:
            if detect_format(path) is not wanted:
                raise ValueError(f"{path} does not look like {fmt} (it reads as {detect_format(path)})")
    from ccf.capture.readers import Format, detect_format

    if inputs and all(detect_format(p) is Format.BINANCE_KLINE_CSV for p in inputs):
        # bars in: one window per 1-minute bar
        kline_mode = settings.features.model_copy(update={"mode": "kline", "window_s": 60.0})
        settings = settings.model_copy(update={"features": kline_mode})
    sink = CollectSink()
    t0 = time.perf_counter()
    with progress("backtest", unit="records") as bar:
        counted = _Counted(iter(read_records(list(inputs), with_extra=True)), bar)
        source = RecordSource({"backtest": lambda: iter(counted)}, stop_after_s=settings.stop_after, pace=0.0)
        run_dataflow(build_flow(settings, source=source, sink=sink))
    elapsed = time.perf_counter() - t0

    rows = [r for o in sink.outs for r in o.rows]
    if not any(r.book_valid for r in rows):
        from ccf.errors import DataFileError

        what = f"{len(rows)} windows, none with a valid book" if rows else "no feature window"
        raise DataFileError(f"{', '.join(map(str, inputs))}: {what} from {counted.n} items: {counted.why_empty()}")
    preds = [p for o in sink.outs for p in o.predictions]
    final: dict[tuple[str, str, str, int], Any] = {}
    for o in sink.outs:
        for s in o.scores:  # the last score of each (venue, symbol, model, horizon) covers the whole run
            final[(s.venue, s.symbol, s.model, s.horizon_steps)] = s
    out_dir.mkdir(parents=True, exist_ok=True)
    feats = [feature_row_values(r) for r in rows]
    pq.write_table(pa.Table.from_pylist(feats), out_dir / "features.parquet")
    pq.write_table(
        pa.Table.from_pylist([prediction_values(p, settings.forecast.quantiles) for p in preds]),
        out_dir / "predictions.parquet",
    )
    scores = [score_values(s) for s in sorted(final.values(), key=lambda s: (s.model, s.horizon_steps, s.symbol))]
    pq.write_table(pa.Table.from_pylist(scores), out_dir / "scores.parquet")
    span_s = (rows[-1].window_end - rows[0].window_start) / 1e9 if rows else 0.0
    summary = {
        "inputs": [str(p) for p in inputs],
        "records": counted.n,
        "seconds": round(elapsed, 3),
        "records_per_s": round(counted.n / elapsed, 1) if elapsed > 0 else None,
        "event_time_span_s": span_s,
        "x_real_time": round(span_s / elapsed, 1) if elapsed > 0 else None,
        "symbols": sorted({f"{r.venue}:{r.symbol}" for r in rows}),
        "feature_rows": len(rows),
        "predictions": len(preds),
        "late": sum(len(o.late) for o in sink.outs),
        "problems": sum(len(o.problems) for o in sink.outs),
        "skipped": skipped(sink.outs),
        "scores": scores,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    summary["report"] = str(_report(out_dir, summary, settings))
    logger.info("backtest: %d records in %.2fs -> %s", counted.n, elapsed, out_dir)
    return summary


def skipped(outs: Sequence[EngineOut]) -> dict[str, int]:
    """What the run did not use, by reason: dead letters and book problems by their error, late records by type.

    >>> out = EngineOut()
    >>> out.problems += [{"error": "ParseError"}, {"error": "ParseError"}, {"error": "GapError"}]
    >>> skipped([out])
    {'GapError': 1, 'ParseError': 2}
    """
    counts: dict[str, int] = {}
    for o in outs:
        for p in o.problems:
            kind = str(p.get("error", "problem"))
            counts[kind] = counts.get(kind, 0) + 1
        for rec in o.late:
            kind = "late_" + type(rec).__name__.lower()
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _report(out_dir: Path, summary: dict[str, Any], settings: Settings) -> Path:
    from ccf.report import score_figures, write_report

    qs = settings.forecast.quantiles
    band = max(qs) - min(qs) if qs else 0.0
    images: list[tuple[str, str]] = []
    symbols = sorted({s["symbol"] for s in summary["scores"]})
    for symbol in symbols[:6]:  # a figure per symbol; the table has every one
        rows = [s for s in summary["scores"] if s["symbol"] == symbol]
        images += score_figures(out_dir, rows, band, prefix=f"{symbol}_" if len(symbols) > 1 else "")
    skipped_text = ", ".join(f"{v} {k}" for k, v in summary["skipped"].items()) or "nothing"
    intro = (f"{summary['records']} records of {', '.join(summary['inputs'])} in {summary['seconds']} s "
             f"({summary['x_real_time']}x real time): {summary['feature_rows']} windows of "
             f"{', '.join(summary['symbols'])}, {summary['predictions']} predictions, scored with the shared scorer "
             f"over the whole run. Skipped: {skipped_text}.")
    return write_report(out_dir, "Backtest report", intro, summary["scores"], images)

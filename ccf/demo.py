"""``ccf demo``: the whole loop in one process on embedded defaults, served by the Panel app.

::

    synthetic venue ─► features flow (exact books, windows, features, baselines, live scores) ─► DuckDB store
                            └─ rows ─► TFT stage: after a warm-up, a TFT is trained on the rows so far (MLflow
                                       registry under the run dir), then forecasts every new window; its forecasts
                                       are scored by the same scorer as the baselines and written beside theirs
    Panel app (dashboards/app.py) ◄── the same store, read through this process's DuckDB instance

Everything runs in this process so the store has one writer process (DuckDB's rule): the flow on a thread, the TFT
stage on another, the app's server on the main thread. Ctrl-C stops the server, then the flow (its source ends, so
the run closes cleanly and prints its summary) and the TFT stage.
"""

from __future__ import annotations

import importlib
import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from ccf.engine import EngineOut
from ccf.schemas import FeatureRow, Prediction
from ccf.settings import KafkaSettings, QuestDBSettings, Settings, StoreSettings
from ccf.sources import ChunkingSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What ``ccf demo`` can be told (see its ``--help``)."""

    speed: float = 1.0
    duration_s: float | None = None
    tft_after: int = 600  # windows per symbol before the TFT trains; 0: no TFT
    tft_epochs: int = 3
    fresh: bool = True
    show: bool = False


def demo_settings(settings: Settings, store: Path, options: DemoOptions) -> Settings:
    """``settings`` on embedded defaults: the synthetic venue at ``speed`` into ``store``, no Kafka, no QuestDB.

    >>> s = demo_settings(Settings(_env_prefix="CCF_DOCTEST_"), Path("/tmp/d.duckdb"), DemoOptions(speed=5))
    >>> s.venues.source, s.venues.speed, str(s.store.path), s.kafka.enabled, s.questdb.enabled
    ('synthetic', 5.0, '/tmp/d.duckdb', False, False)
    """
    venues = settings.venues.model_copy(update={"source": "synthetic", "speed": float(options.speed)})
    return settings.model_copy(update={
        "venues": venues, "store": StoreSettings(path=store), "kafka": KafkaSettings(), "questdb": QuestDBSettings(),
        "stop_after": options.duration_s,
    })


# ----------------------------------------------------------------------------------------- flow plumbing
def stoppable(inner: FixedPartitionedSource[Any, Any], stop: threading.Event) -> ChunkingSource:
    """``inner``, ending (cleanly, as at end of input) once ``stop`` is set."""

    def until_stopped(batch: list[Any]) -> list[Any]:
        if stop.is_set():
            raise StopIteration
        return batch

    return ChunkingSource(inner, until_stopped)


class _TeePartition(StatefulSinkPartition[EngineOut, None]):
    def __init__(self, inner: StatefulSinkPartition[EngineOut, None], on_rows: Any) -> None:
        self.inner = inner
        self.on_rows = on_rows

    def write_batch(self, items: list[EngineOut]) -> None:
        self.inner.write_batch(items)  # stored first: what the TFT stage sees is already in the store
        rows = [r for o in items for r in o.rows]
        if rows:
            self.on_rows(rows)

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.inner.close()


class TeeSink(FixedPartitionedSink[EngineOut, None]):
    """The flow's own output sink, also handing every batch of feature rows to ``on_rows``."""

    def __init__(self, inner: FixedPartitionedSink[EngineOut, None], on_rows: Any) -> None:
        self.inner = inner
        self.on_rows = on_rows

    def list_parts(self) -> list[str]:
        return list(self.inner.list_parts())

    def part_fn(self, item_key: str) -> int:
        return int(self.inner.part_fn(item_key))

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _TeePartition:
        return _TeePartition(self.inner.build_part(step_id, for_part, resume_state), self.on_rows)


# --------------------------------------------------------------------------------------------- TFT stage
class TftStage:
    """Trains the TFT once every symbol has ``after`` windows, then forecasts and scores every new window."""

    def __init__(self, settings: Settings, after: int, epochs: int) -> None:
        self.settings = settings
        self.after = after
        self.epochs = epochs
        self.inbox: queue.Queue[list[FeatureRow]] = queue.Queue()
        self.history: dict[str, deque[FeatureRow]] = {}
        self.status = "waiting for rows"
        self.predictions = 0

    def offer(self, rows: list[FeatureRow]) -> None:
        self.inbox.put(rows)

    def run(self, stop: threading.Event) -> None:
        predictor: Any = None
        store: Any = None
        scorers: dict[str, Any] = {}
        try:
            while not stop.is_set():
                try:
                    rows = self.inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if predictor is None:
                    self._remember(rows)
                    if self.status.startswith("waiting") and self._warm():
                        predictor = self._train()
                        if predictor is not None:
                            from ccf.store.duckdb_store import DuckDBStore
                            from ccf.store.sinks import all_tables

                            store = DuckDBStore(self.settings.store.path, all_tables(self.settings))
                    continue
                self._serve(predictor, store, scorers, rows)
        finally:
            if store is not None:
                store.close()

    def _remember(self, rows: Sequence[FeatureRow]) -> None:
        for r in rows:
            key = f"{r.venue}:{r.symbol}"
            buf = self.history.get(key)
            if buf is None:
                buf = self.history[key] = deque(maxlen=max(self.after * 4, 1))
            buf.append(r)

    def _warm(self) -> bool:
        have = min((len(b) for b in self.history.values()), default=0)
        self.status = f"waiting: {have}/{self.after} windows per symbol before the TFT trains"
        return have >= self.after

    def _train(self) -> Any:
        """The trained TFT as a predictor, or None (and the reason logged) when it cannot be trained here."""
        self.status = "training the TFT"
        logger.info("TFT: training on %d windows of %d symbols", sum(map(len, self.history.values())),
                    len(self.history))
        try:
            dataset = importlib.import_module("models.dataset")
            train = importlib.import_module("models.train")
            predict = importlib.import_module("models.predict")
            registry = importlib.import_module("models.registry")
            torch = importlib.import_module("torch")
            torch.set_num_threads(1)
            frame = dataset.rows_to_frame([r for b in self.history.values() for r in b])
            cfg = train.TrainConfig(max_epochs=self.epochs, patience=2, progress=False, accelerator="cpu",
                                    limit_train_batches=50,
                                    checkpoint_dir=self.settings.run_dir / "demo" / "tft-checkpoints")
            result = train.train(frame, self.settings, cfg)
            loaded = registry.LoadedModel(self.settings.mlflow.model_name, str(result.version or "demo"),
                                          str(result.run_id or ""), result.fitted.model, result.fitted.spec)
            predictor = predict.Predictor(loaded, quantiles=self.settings.forecast.quantiles)
        except Exception as exc:  # no ml extra, too little data, an MLflow problem: the demo goes on without it
            self.status = f"TFT step skipped: {type(exc).__name__}: {exc}"
            logger.warning("%s", self.status, exc_info=True)
            return None
        self.status = f"TFT version {result.version} forecasting ({result.decision.reason})"
        logger.info("%s", self.status)
        for buf in self.history.values():  # the predictor's windows start with what training saw last
            predictor.on_rows(list(buf)[-(cfg.encoder_length + 1):])
        self.history.clear()
        return predictor

    def _serve(self, predictor: Any, store: Any, scorers: dict[str, Any], rows: list[FeatureRow]) -> None:
        from ccf.forecast.scoring import Scorer
        from ccf.store.tables import prediction_values, score_values

        preds: list[Prediction] = predictor.on_rows(rows)
        self.predictions += len(preds)
        for r in rows:
            key = f"{r.venue}:{r.symbol}"
            scorer = scorers.get(key)
            if scorer is None:
                scorer = scorers[key] = Scorer(r.venue, r.symbol)
            mid = r.features.get("mid")
            scorer.observe_mid(r.window_end, mid if r.book_valid and mid is not None else math.nan)
        for p in preds:
            scorers[f"{p.venue}:{p.symbol}"].add_prediction(p)
        store.upsert("predictions", [prediction_values(p, self.settings.forecast.quantiles) for p in preds])
        last = {f"{r.venue}:{r.symbol}": r.window_end for r in rows}
        scores = [s for key, end in last.items() if key in scorers for s in scorers[key].scores(end)]
        store.upsert("scores", [score_values(s) for s in scores])


# ------------------------------------------------------------------------------------------------ the demo
def run_demo(settings: Settings, options: DemoOptions, store: Path | None = None) -> None:
    """Run the loop and serve the app until Ctrl-C (or until ``duration_s`` of event time has been written)."""
    from ccf.entry import run_dataflow
    from ccf.exposure import check_exposure
    from ccf.store.sinks import OutputSink
    from flows.features import build_flow, make_source

    check_exposure(settings.app)  # an exposed app without a real password fails before anything starts
    path = store or settings.run_dir / "demo" / "store.duckdb"
    if options.fresh:
        for p in (path, Path(f"{path}.wal")):
            p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(settings, path, options)
    stop = threading.Event()
    tft = TftStage(settings, options.tft_after, options.tft_epochs) if options.tft_after > 0 else None

    def on_rows(rows: list[FeatureRow]) -> None:
        if tft is not None:
            tft.offer(rows)

    source = make_source(settings)
    assert isinstance(source, FixedPartitionedSource)  # the synthetic venue's RecordSource
    flow = build_flow(settings, source=stoppable(source, stop), sink=TeeSink(OutputSink(settings), on_rows))

    def run_flow() -> None:
        try:
            run_dataflow(flow)
        finally:
            logger.info("features flow ended")

    threads = [threading.Thread(target=run_flow, name="ccf-demo-flow", daemon=True)]
    if tft is not None:
        threads.append(threading.Thread(target=tft.run, args=(stop,), name="ccf-demo-tft", daemon=True))
    for t in threads:
        t.start()
    app = settings.app
    logger.info("ccf demo: synthetic venue at %sx into %s; app on http://%s:%d/ (Ctrl-C to stop)",
                options.speed or "max", path, app.host, app.port)
    if tft is None:
        logger.info("TFT step off (--tft-after 0): baselines only")
    else:
        logger.info("the TFT trains after %d windows per symbol (%.0f s at this speed)", options.tft_after,
                    options.tft_after * settings.features.window_s / (options.speed or 100.0))
    try:
        importlib.import_module("dashboards.app").serve(settings, show=options.show)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if tft is not None:
            logger.info("TFT stage: %s; %d forecasts", tft.status, tft.predictions)

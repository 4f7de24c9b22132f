"""``ccf predict``: the registry's champion TFT on live feature rows, one batch per step for all symbols.

:class:`Predictor` keeps, per ``venue:SYMBOL``, the last ``FeatureSpec.history`` rows (their scaled inputs
cached), builds one batch of every symbol that has a full window and calls the network's ``forward`` directly
(:func:`models.network.make_batch`, no Lightning Trainer). It emits one :class:`~ccf.schemas.Prediction` per horizon
(``model="tft"``, ``model_version`` = the registry version, quantiles keyed by ``str(q)``).

Nothing crashes on bad input: a symbol the model never saw, another feature set, a gap in the windows (the window
restarts and fills again), an invalid book or a row out of order is skipped and its reason logged (the first time
per symbol and reason at WARNING, then at DEBUG; gaps at INFO each time) and counted in :attr:`Predictor.skipped`.

:class:`ChampionWatcher` polls the alias every ``poll_s`` seconds and loads the version it moved to (provenance
checked, weights and JSON only: :func:`models.registry.load_version`); :func:`run_predictor` swaps it in between two
batches. A version it refuses (:class:`~models.registry.UntrustedModelError`: not ours, or a pickle) is logged at
ERROR, kept in :attr:`ChampionWatcher.refused` and not downloaded again; the current model goes on serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ccf.forecast.calibration import LabelledCalibrator, QuantileCalibrator
from ccf.schemas import FeatureRow, Prediction, decode, feature
from ccf.settings import Settings
from models.dataset import FeatureSpec, derive, scale
from models.evaluate import tft_predictions
from models.network import Layout, backward_returns, make_batch, run_network
from models.registry import CHAMPION, LoadedModel, UntrustedModelError, alias_version, load_version
from models.targets import window_vols

logger = logging.getLogger(__name__)


@dataclass
class _Window:
    rows: deque[FeatureRow]
    x: deque[np.ndarray]


class Predictor:
    """Rolling windows per symbol and batched forward passes; see the module docstring."""

    def __init__(self, loaded: LoadedModel, device: str = "cpu", quantiles: Sequence[float] | None = None) -> None:
        self.device = device
        self.quantiles = quantiles
        self.windows: dict[str, _Window] = {}
        self.skipped: Counter[str] = Counter()
        self._warned: set[tuple[str, str]] = set()
        self.latencies_s: deque[float] = deque(maxlen=10_000)  # seconds per forward step, the most recent
        self.swap(loaded)
        # the network's bands are raw: one online calibration for every model's (ccf.forecast.calibration), learnt
        # from the rows this predictor reads (their mids are the labels)
        self.calibration = LabelledCalibrator(QuantileCalibrator(tuple(quantiles or loaded.spec.quantiles)))

    def swap(self, loaded: LoadedModel) -> None:
        """Use another model from the next batch on; windows are kept (re-scaled for its inputs) when it reads the
        same feature set, else dropped."""
        old = getattr(self, "loaded", None)
        if old is not None and old.version != loaded.version:
            self.calibration.calibrator.state.clear()  # another network, other raw bands: learn their offsets anew
        self.loaded = loaded
        self.spec: FeatureSpec = loaded.spec
        self.model = loaded.model.to(self.device).eval()
        self.layout = Layout.of(loaded.model, loaded.spec)
        if old is not None and old.spec.feature_set != loaded.spec.feature_set:
            self.windows = {}
        self.windows = {g: self._new_window(list(w.rows)) for g, w in self.windows.items()}
        logger.info("predicting with %s version %s (run %s)", loaded.name, loaded.version, loaded.run_id)

    def _new_window(self, rows: Sequence[FeatureRow] = ()) -> _Window:
        n = self.spec.history
        w = _Window(deque(maxlen=n), deque(maxlen=n))
        for r in rows:
            w.rows.append(r)
            w.x.append(self._inputs(r))
        return w

    def _inputs(self, row: FeatureRow) -> np.ndarray:
        cols = {k: np.array([math.nan if v is None else v], dtype=np.float64) for k, v in row.features.items()}
        x: np.ndarray = scale(derive(cols), self.spec, f"{row.venue}:{row.symbol}")[0]
        return x

    def _skip(self, group: str, reason: str, detail: str = "", level: int = logging.WARNING) -> None:
        self.skipped[reason] += 1
        first = (group, reason) not in self._warned
        self._warned.add((group, reason))
        logger.log(level if first or level == logging.INFO else logging.DEBUG, "tft: %s skipped: %s%s", group,
                   reason, f" ({detail})" if detail else "")

    def _push(self, row: FeatureRow) -> str | None:
        """Take one row; the group's key when its window is full (ready to forecast), else None."""
        g = f"{row.venue}:{row.symbol}"
        spec = self.spec
        if row.feature_set != spec.feature_set:
            self._skip(g, "feature set", f"{row.feature_set}, the model reads {spec.feature_set}")
            return None
        if g not in spec.groups or self.layout.code(g) is None:
            self._skip(g, "unseen symbol", f"model version {self.loaded.version} was trained on {list(spec.groups)}")
            return None
        w = self.windows.get(g)
        if w is None:
            w = self.windows[g] = self._new_window()
        last = w.rows[-1] if w.rows else None
        if last is not None and row.window_start < last.window_end:
            self._skip(g, "out of order", f"window {row.window_start} before the end of {last.window_start}")
            return None
        mid = feature(row, "mid")
        if not (row.book_valid and mid > 0):
            self._skip(g, "invalid book", f"window {row.window_start}", logging.DEBUG)
            self.windows[g] = self._new_window()
            return None
        if last is not None and row.window_start != last.window_end:
            missing = (row.window_start - last.window_end) // spec.width_ns
            self._skip(g, "gap", f"{missing} window(s) missing before {row.window_start}; window restarts",
                       logging.INFO)
            w = self.windows[g] = self._new_window()
        w.rows.append(row)
        w.x.append(self._inputs(row))
        return g if len(w.rows) == spec.history else None

    def on_rows(self, rows: Iterable[FeatureRow]) -> list[Prediction]:
        """Predictions for ``rows`` (any mix of symbols, time order within one): one forward pass per round of
        symbols (a symbol's second row in ``rows`` starts the next round)."""
        out: list[Prediction] = []
        ready: list[str] = []
        for row in rows:
            self.calibration.observe_row(row)  # every row, invalid books too: a label for what is pending
            g = f"{row.venue}:{row.symbol}"
            if g in ready:
                out += self._forecast(ready)
                ready = []
            if self._push(row) is not None:
                ready.append(g)
        out += self._forecast(ready)
        return out

    def on_row(self, row: FeatureRow) -> list[Prediction]:
        return self.on_rows([row])

    def _forecast(self, groups: Sequence[str]) -> list[Prediction]:
        if not groups:
            return []
        t0 = time.perf_counter()
        spec, length = self.spec, self.spec.encoder_length
        wins = [self.windows[g] for g in groups]
        mids = np.array([[feature(r, "mid") for r in w.rows] for w in wins], dtype=np.float64)
        inputs = np.stack([np.stack(list(w.x)[-length:]) for w in wins])
        ends = np.array([[r.window_end for r in list(w.rows)[-length:]] for w in wins], dtype=np.int64)
        codes = np.array([self.layout.group_codes[g] for g in groups], dtype=np.int64)
        vols = window_vols(np.log(mids), spec, groups)
        batch = make_batch(spec, self.layout, backward_returns(mids[:, spec.vol_window:], spec), inputs, ends, codes,
                           vols)
        q = run_network(self.model, batch, spec, self.device)
        preds = [self.calibration.calibrate(p)
                 for p in tft_predictions(spec, list(groups), ends[:, -1], q, self.loaded.version, self.quantiles)]
        self.latencies_s.append(time.perf_counter() - t0)
        return preds


class ChampionWatcher:
    """Loads the version an alias points at, and again whenever it moves (checked at most every ``poll_s``)."""

    def __init__(self, client: Any, settings: Settings, alias: str = CHAMPION, poll_s: float = 30.0,
                 device: str = "cpu") -> None:
        self.client, self.settings, self.alias = client, settings, alias
        self.poll_s, self.device = poll_s, device
        self.current: LoadedModel | None = None
        self.refused: dict[str, str] = {}  # version -> why it was refused (UntrustedModelError), never retried
        self._next = 0.0

    def poll(self, force: bool = False) -> LoadedModel | None:
        """The newly loaded model when the alias moved since the last load, else None (errors are logged)."""
        now = time.monotonic()
        if not force and now < self._next:
            return None
        self._next = now + self.poll_s
        name = self.settings.mlflow.model_name
        try:
            version = alias_version(self.client, name, self.alias)
            if version is None or version in self.refused or (
                    self.current is not None and self.current.version == version):
                return None
            loaded = load_version(self.client, self.settings, name, version, self.device)
        except UntrustedModelError as exc:
            self.refused[str(version)] = str(exc)
            logger.error("not loading %s@%s (version %s, %d refused so far): %s", name, self.alias, version,
                         len(self.refused), exc)
            return None
        except Exception as exc:  # the registry down for a while must not stop predictions with the current model
            logger.warning("could not check %s@%s: %s", name, self.alias, exc)
            return None
        self.current = loaded
        return loaded


def kafka_rows(settings: Settings, topic: str, from_beginning: bool, stop: threading.Event,
               batch: int = 1000, timeout_s: float = 0.2) -> Iterator[list[FeatureRow]]:
    """Batches of feature rows from a Kafka topic (an empty batch when nothing came within ``timeout_s``)."""
    from confluent_kafka import Consumer

    conf: dict[str, Any] = dict(settings.kafka.client_config())
    conf.update({"group.id": settings.kafka.group_id + "-tft", "enable.auto.commit": True,
                 "auto.offset.reset": "earliest" if from_beginning else "latest"})
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    try:
        while not stop.is_set():
            rows: list[FeatureRow] = []
            for m in consumer.consume(num_messages=batch, timeout=timeout_s):
                if m.error() is not None:
                    logger.warning("Kafka %s: %s", topic, m.error())
                    continue
                value = m.value()
                if value is None:
                    continue
                try:
                    rec = decode(value)
                except Exception as exc:  # a foreign or corrupt message on the topic is skipped, never fatal
                    logger.warning("%s[%d]@%d does not decode: %s", topic, m.partition(), m.offset(), exc)
                    continue
                if isinstance(rec, FeatureRow):
                    rows.append(rec)
            yield rows
    finally:
        consumer.close()


def run_predictor(
    settings: Settings,
    *,
    source: Iterable[Sequence[FeatureRow]] | None = None,
    on_predictions: Callable[[list[Prediction]], None] | None = None,
    to_kafka: bool | None = None,
    features_topic: str | None = None,
    predictions_topic: str | None = None,
    alias: str = CHAMPION,
    poll_s: float = 30.0,
    from_beginning: bool = False,
    device: str = "cpu",
    stop: threading.Event | None = None,
    client: Any | None = None,
) -> Predictor | None:
    """Serve forecasts until ``source`` ends or ``stop`` is set.

    ``source``: batches of rows in process; default: Kafka ``<prefix>features``. Predictions go to ``on_predictions``
    and, when Kafka is configured (or ``to_kafka``), to ``<prefix>predictions``.
    """
    from models.registry import open_client

    stop = stop or threading.Event()
    watcher = ChampionWatcher(client or open_client(settings), settings, alias, poll_s, device)
    prefix = settings.kafka.topic_prefix
    writer = None
    if to_kafka if to_kafka is not None else settings.kafka.enabled:
        from ccf.store.kafka_out import KafkaWriter

        writer = KafkaWriter(settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": ""})}))
    out_topic = predictions_topic or prefix + "predictions"
    batches = source if source is not None else kafka_rows(settings, features_topic or prefix + "features",
                                                           from_beginning, stop)
    predictor: Predictor | None = None
    while predictor is None and not stop.is_set():
        loaded = watcher.poll(force=True)
        if loaded is not None:
            predictor = Predictor(loaded, device, settings.forecast.quantiles)
        else:
            logger.info("no %s@%s yet; waiting", settings.mlflow.model_name, alias)
            stop.wait(poll_s)
    if predictor is None:
        return None
    try:
        for rows in batches:
            if stop.is_set():
                break
            newer = watcher.poll()
            if newer is not None:
                predictor.swap(newer)
            preds = predictor.on_rows(rows)
            if preds and writer is not None:
                writer.send(out_topic, preds)
                writer.flush()
            if preds and on_predictions is not None:
                on_predictions(preds)
    finally:
        close = getattr(batches, "close", None)
        if callable(close):  # the Kafka generator: leaves its consumer group now, not at garbage collection
            close()
        if writer is not None:
            writer.close()
    return predictor

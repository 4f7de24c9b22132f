"""Live data for the Panel app: one shared poller per server process, over the embedded store or QuestDB.

:class:`Poller` asks only for what is new since its last poll, per symbol: each ``venue:SYMBOL`` (and each model of
it) is read from its own newest row seen, minus a short look-back, so a symbol that lags the others loses no
windows (on the first poll, or after a pause, from its own newest row minus the buffer's span). With that come the
small summaries (latest score per model, health per kind, latest news) and, for TFT versions, what the model
registry says of them (:mod:`dashboards.promotion`). It keeps bounded buffers: ``max_windows`` rows per
``venue:SYMBOL`` and per ``(venue:SYMBOL, model, horizon)``, at most ``max_keys`` keys of each. Every poll publishes
one immutable :class:`Snapshot`; sessions only read it. :func:`start_polling` schedules it once per server process
(Panel's ``schedule_task``), shared by every session. Readers: :mod:`dashboards.readers`.

Nothing here connects, copies or starts anything until a method is called.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from ccf.settings import Settings
from dashboards.readers import Reader, Row, Session, StoreUnavailable, reader_for

logger = logging.getLogger(__name__)

PredKey = tuple[str, str, int]  # (venue:SYMBOL, model, horizon_steps)
Labeller = Callable[[Iterable[str]], dict[str, str]]  # TFT versions -> "champion" | "promoted" | "not promoted"
TFT = "tft"


@dataclass(frozen=True)
class Snapshot:
    """What one poll saw. Immutable: sessions read it without locks."""

    version: int = 0
    where: str = ""
    polled_at: float | None = None  # wall-clock seconds of the last successful poll
    error: str | None = None  # why the last poll failed, if it did
    features: dict[str, tuple[Row, ...]] = field(default_factory=dict)  # venue:SYMBOL -> windows, oldest first
    predictions: dict[PredKey, tuple[Row, ...]] = field(default_factory=dict)  # oldest first
    scores: tuple[Row, ...] = ()  # latest score per (venue, symbol, model, horizon)
    health: tuple[Row, ...] = ()  # per (venue, symbol, kind): n (sum of value), last (newest value), last_ts
    news: tuple[Row, ...] | None = None  # newest first; None: there is no news table
    promotion: dict[str, str] = field(default_factory=dict)  # TFT model_version -> what the registry says

    @property
    def keys(self) -> list[str]:
        return sorted(self.features)

    def latest_window_end(self) -> int | None:
        ends = [rows[-1]["window_end"] for rows in self.features.values() if rows]
        return max(ends) if ends else None

    def model_version(self, key: str, model: str) -> str | None:
        """The version of ``model`` in the newest forecast for ``key``."""
        newest = [rows[-1] for (k, m, _), rows in self.predictions.items() if k == key and m == model and rows]
        return str(max(newest, key=lambda p: p["issued_at"])["model_version"]) if newest else None


def _quote(v: Any) -> str:
    return "'" + str(v).replace("'", "''") + "'"


class Poller:
    """Polls one reader; keeps bounded buffers; publishes a :class:`Snapshot` after every poll."""

    def __init__(
        self,
        reader: Reader,
        *,
        window_s: float = 1.0,
        feature_columns: Sequence[str] = (),
        quantile_columns: Sequence[str] = ("q10", "q50", "q90"),
        max_windows: int = 300,
        max_keys: int = 64,
        lookback_windows: int = 30,
        labeller: Labeller | None = None,
    ) -> None:
        self.reader = reader
        self.width_ns = int(window_s * 1e9)
        self.feature_columns = tuple(feature_columns)
        self.quantile_columns = tuple(quantile_columns)
        self.max_windows = max_windows
        self.max_keys = max_keys
        self.lookback_ns = lookback_windows * self.width_ns
        self.labeller = labeller
        self.polls = 0
        self.min_gap_s = 0.0  # grows when reading is slow (a big store copied per poll), so polling stays light
        self._features: dict[str, deque[Row]] = {}
        self._preds: dict[PredKey, deque[Row]] = {}
        self._busy = threading.Lock()
        self._last_end = 0.0
        self._snap = Snapshot(where=reader.where)

    def snapshot(self) -> Snapshot:
        return self._snap

    def poll(self, force: bool = False) -> bool:
        """Read what is new; return whether the snapshot changed. Never raises for store trouble (it is shown).

        A poll is skipped while another runs, and (unless ``force``) until ``min_gap_s`` has passed since the last
        one ended: four times the last poll's duration, so slow reads (a big store copied) use at most a fifth of
        the time."""
        t0 = time.monotonic()
        if not force and t0 - self._last_end < self.min_gap_s:
            return False
        if not self._busy.acquire(blocking=False):
            return False  # a poll is already running
        try:
            try:
                with self.reader.session() as s:
                    feats = self._read_new(s, "features", "window_start", ("venue", "symbol"), self._feature_cols(),
                                           self._seen_features())
                    preds = self._read_new(s, "predictions", "issued_at", ("venue", "symbol", "model"),
                                           self._prediction_cols(), self._seen_predictions())
                    scores = s.run(self._scores_sql())
                    health = s.run(self._health_sql())
                    news = self._news(s)
            except StoreUnavailable as exc:
                return self._failed(str(exc))
            except Exception as exc:  # a store we do not own can fail in many ways: show it, poll again later
                logger.warning("reading %s failed: %s", self.reader.where, exc, exc_info=True)
                return self._failed(f"{type(exc).__name__}: {exc}")
            self._merge(feats, preds)
            self.polls += 1
            old = self._snap
            self._snap = replace(
                old, version=old.version + 1, where=self.reader.where, polled_at=time.time(), error=None,
                features={k: tuple(v) for k, v in self._features.items()},
                predictions={k: tuple(v) for k, v in self._preds.items()},
                scores=tuple(scores), health=tuple(health), news=None if news is None else tuple(news),
                promotion=self._labels(),
            )
            return True
        finally:
            self._last_end = time.monotonic()
            self.min_gap_s = 4 * (self._last_end - t0)
            self._busy.release()

    def _failed(self, why: str) -> bool:
        changed = self._snap.error != why
        if changed:
            logger.info("live data: %s", why)
            self._snap = replace(self._snap, version=self._snap.version + 1, where=self.reader.where, error=why)
        return changed

    def _labels(self) -> dict[str, str]:
        if self.labeller is None:
            return {}
        versions = {str(rows[-1]["model_version"]) for (_, m, _), rows in self._preds.items() if m == TFT and rows}
        return self.labeller(versions)

    # -- SQL ------------------------------------------------------------------------------------------------------
    def _ts(self, ns: int) -> str:
        return str(ns) if self.reader.dialect == "duckdb" else f"cast({ns // 1000} as timestamp)"

    def _feature_cols(self) -> tuple[str, ...]:
        return ("window_start", "window_end", "venue", "symbol", *self.feature_columns)

    def _prediction_cols(self) -> tuple[str, ...]:
        base = ("issued_at", "target_time", "venue", "symbol", "model", "model_version", "horizon_steps", "value")
        return (*base, *self.quantile_columns)

    def _seen_features(self) -> dict[tuple[str, ...], int]:
        return {tuple(k.split(":", 1)): buf[-1]["window_start"] for k, buf in self._features.items() if buf}

    def _seen_predictions(self) -> dict[tuple[str, ...], int]:
        seen: dict[tuple[str, ...], int] = {}
        for (key, model, _), buf in self._preds.items():
            if buf:
                k = (*key.split(":", 1), model)
                seen[k] = max(seen.get(k, 0), buf[-1]["issued_at"])
        return seen

    def _newest(self, s: Session, t: str, ts: str, by: tuple[str, ...]) -> list[Row]:
        """The newest ``ts`` (as ``m``) per ``by``, newest first, at most ``max_keys`` of them."""
        keys = ", ".join(by)
        if self.reader.dialect == "duckdb":
            return s.run(f"SELECT {keys}, max({ts}) AS m FROM {t} GROUP BY {keys} ORDER BY m DESC LIMIT {self.max_keys}")
        rows = s.run(f"SELECT {keys}, {ts} AS m FROM {t} LATEST ON {ts} PARTITION BY {keys}")
        return sorted(rows, key=lambda r: -int(r["m"]))[: self.max_keys]

    def _read_new(self, s: Session, table: str, ts: str, by: tuple[str, ...], cols: tuple[str, ...],
                  seen: dict[tuple[str, ...], int]) -> list[Row]:
        """Rows of ``table`` newer than what was seen, per ``by`` key (see the module docstring)."""
        t = self.reader.table(table)
        span = self.max_windows * self.width_ns
        clauses = []
        for top in self._newest(s, t, ts, by):
            key = tuple(str(top[c]) for c in by)
            newest, last = int(top["m"]), seen.get(key)
            if last is not None and newest <= last:
                continue  # nothing new for this key
            since = newest - span if last is None else max(newest - span, last - self.lookback_ns)
            match = " AND ".join(f"{c} = {_quote(v)}" for c, v in zip(by, key, strict=True))
            clauses.append(f"({match} AND {ts} > {self._ts(since)})")
        if not clauses:
            return []
        names = ", ".join(f'"{c}"' for c in cols)
        return s.run(f"SELECT {names} FROM {t} WHERE {' OR '.join(clauses)} ORDER BY {ts}")

    def _scores_sql(self) -> str:
        t = self.reader.table("scores")
        keys = "venue, symbol, model, horizon_steps"
        if self.reader.dialect == "duckdb":
            return f"SELECT * FROM {t} QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY window_end DESC) = 1"
        return f"SELECT * FROM {t} LATEST ON window_end PARTITION BY {keys}"

    def _health_sql(self) -> str:
        last = "arg_max(value, ts)" if self.reader.dialect == "duckdb" else "last(value)"
        return (f"SELECT venue, symbol, kind, sum(value) AS n, {last} AS last, max(ts) AS last_ts "
                f"FROM {self.reader.table('health')} GROUP BY venue, symbol, kind ORDER BY kind, venue, symbol")

    def _news(self, s: Session) -> list[Row] | None:
        if not s.has_table("news"):
            return None
        t = self.reader.table("news")
        try:  # the news table belongs to the news flow: newest first when it has `fetched`, else as stored
            return s.run(f"SELECT * FROM {t} ORDER BY fetched DESC LIMIT 10")
        except StoreUnavailable:
            raise
        except Exception:  # no `fetched` column in this layout
            return s.run(f"SELECT * FROM {t} LIMIT 10")

    # -- buffers --------------------------------------------------------------------------------------------------
    def _merge(self, feats: list[Row], preds: list[Row]) -> None:
        for r in feats:
            buf = self._bounded(self._features, f"{r['venue']}:{r['symbol']}")
            if not buf or r["window_start"] > buf[-1]["window_start"]:  # else seen already (the look-back)
                buf.append(r)
        for p in preds:
            pbuf = self._bounded(self._preds, (f"{p['venue']}:{p['symbol']}", str(p["model"]), int(p["horizon_steps"])))
            if not pbuf or p["issued_at"] > pbuf[-1]["issued_at"]:
                pbuf.append(p)

    def _bounded(self, buffers: dict[Any, deque[Row]], key: Any) -> deque[Row]:
        # dicts keep insertion order: a key moves to the end when touched, so the first key is the quietest
        buf = buffers.pop(key, None)
        if buf is None:
            if len(buffers) >= self.max_keys:
                del buffers[next(iter(buffers))]
            buf = deque(maxlen=self.max_windows)
        buffers[key] = buf
        return buf


def make_poller(settings: Settings, max_windows: int = 300) -> Poller:
    """A poller for what ``settings`` configure (QuestDB, else the embedded store), labelling TFT versions from the
    model registry."""
    from ccf.store.tables import features_table, predictions_table
    from dashboards.promotion import Promotion

    wanted = ("book_valid", "epoch", "mid", "spread", "spread_bps", "best_bid", "best_ask", "imbalance_1",
              "trade_count", "volume", "book_events", "late_trades")
    names = features_table(settings.features.depth_levels).column_names
    cols = [c for c in names if c in wanted or c.startswith(("depth_bid_", "depth_ask_"))]
    qcols = [c for c in predictions_table(settings.forecast.quantiles).column_names if c.startswith("q")]
    return Poller(reader_for(settings), window_s=settings.features.window_s, feature_columns=cols,
                  quantile_columns=qcols, max_windows=max_windows, labeller=Promotion(settings).labels)


# ------------------------------------------------------------------------------------- one poller per server
# Here, not in dashboards/app.py: `panel serve` runs the app file afresh for every session, so only an imported
# module can hold what all sessions share.
_POLLERS: dict[str, Poller] = {}
_TASKS: dict[str, Callable[[], Any]] = {}
_LOCK = threading.Lock()


def shared_poller(settings: Settings) -> Poller:
    """The process's poller for this store (made on first use; every session gets the same one)."""
    key = reader_for(settings).ident
    with _LOCK:
        poller = _POLLERS.get(key)
        if poller is None:
            poller = _POLLERS[key] = make_poller(settings)
        return poller


def start_polling(poller: Poller, interval_s: float) -> str:
    """Poll every ``interval_s`` on this Panel server, scheduled once however many sessions ask (Panel's
    ``schedule_task`` is idempotent by name and server-wide); the blocking reads run on a worker thread, so no
    session's event loop waits on the store. Returns the task name."""
    import panel as pn

    name = f"ccf-live-poll-{poller.reader.ident}"
    with _LOCK:
        task = _TASKS.get(name)
        if task is None:

            async def task() -> None:
                await asyncio.to_thread(poller.poll)

            _TASKS[name] = task
    pn.state.schedule_task(name, task, period=timedelta(seconds=interval_s))
    return name

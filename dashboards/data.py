"""Live data for the Panel app: one shared poller per server process, over the embedded store or QuestDB.

Readers
    :class:`DuckDBReader` opens the embedded store read-only for each poll and closes it again. DuckDB lets one
    process write a file and nobody else open it meanwhile, so while the features flow runs the reader copies the
    file (and its WAL) into a private temporary directory and reads the copy; a copy caught mid-checkpoint fails to
    open and the poll is simply retried. When the writer is this same process (``ccf demo``), it reads through the
    writer's own database instance instead. :class:`QuestDBReader` runs SQL over QuestDB's HTTP ``/exec`` endpoint
    (tables named with ``CCF_QUESTDB__TABLE_PREFIX``).

The poller
    :class:`Poller` asks only for what is new since its last poll (features and predictions after the last time it
    saw, minus a short look-back) plus the small summaries (latest score per model, health counts, latest news), and
    keeps bounded buffers: ``max_windows`` rows per ``venue:SYMBOL`` and per ``(venue:SYMBOL, model, horizon)``, at
    most ``max_keys`` keys of each. Every poll publishes one immutable :class:`Snapshot`; sessions only read it.
    :func:`start_polling` schedules it once per server process (Panel's ``schedule_task``), shared by every session.

Nothing here connects, copies or starts anything until a method is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ccf.settings import Settings

logger = logging.getLogger(__name__)

Row = dict[str, Any]
PredKey = tuple[str, str, int]  # (venue:SYMBOL, model, horizon_steps)


class StoreUnavailable(Exception):
    """The store cannot be read right now (not created yet, locked copy torn, server down): try again later."""


class QueryError(Exception):
    """The store answered but rejected a query."""


class Session(Protocol):
    def run(self, sql: str) -> list[Row]: ...

    def has_table(self, name: str) -> bool: ...


class Reader(Protocol):
    where: str
    dialect: str  # "duckdb" (timestamps are BIGINT ns) or "questdb" (TIMESTAMP)

    def table(self, name: str) -> str: ...

    def session(self) -> contextlib.AbstractContextManager[Session]: ...


# ------------------------------------------------------------------------------------------------------ readers
class _DuckSession:
    def __init__(self, con: Any) -> None:
        self.con = con

    def run(self, sql: str) -> list[Row]:
        cur = self.con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def has_table(self, name: str) -> bool:
        found = self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name])
        return bool(found.fetchone()[0])


class DuckDBReader:
    """Reads the embedded store without ever taking its write lock (see the module docstring)."""

    dialect = "duckdb"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = f"embedded store {self.path}"
        self.copied = False  # whether the last session read a copy (a writer held the file)
        self._tmp: Path | None = None

    def table(self, name: str) -> str:
        return f'"{name}"'

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        import duckdb

        if not self.path.is_file():
            raise StoreUnavailable(f"no embedded store at {self.path} yet (start the features flow)")
        try:
            con = duckdb.connect(str(self.path), read_only=True)
            self.copied = False
        except duckdb.ConnectionException:
            # this very process writes the file (`ccf demo`): a plain connection shares its database instance
            con = duckdb.connect(str(self.path))
            self.copied = False
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
            con = self._open_copy(duckdb)
        try:
            yield _DuckSession(con)
        finally:
            con.close()

    def _open_copy(self, duckdb: Any) -> Any:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ccf-app-"))
            weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        copy = self._tmp / "snapshot.duckdb"
        wal_src, wal_dst = Path(f"{self.path}.wal"), Path(f"{copy}.wal")
        try:
            wal_dst.unlink(missing_ok=True)
            shutil.copyfile(self.path, copy)
            if wal_src.is_file():
                shutil.copyfile(wal_src, wal_dst)
            con = duckdb.connect(str(copy), read_only=True)
        except (OSError, duckdb.Error) as exc:  # torn copy (a checkpoint ran meanwhile): the next poll retries
            raise StoreUnavailable(f"copy of {self.path} not readable this time: {exc}") from exc
        self.copied = True
        return con


class _QuestSession:
    def __init__(self, reader: QuestDBReader, client: Any) -> None:
        self.reader = reader
        self.client = client

    def run(self, sql: str) -> list[Row]:
        import httpx

        try:
            resp = self.client.get(f"{self.reader.http_url}/exec", params={"query": sql})
            body: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise StoreUnavailable(f"QuestDB at {self.reader.http_url} unreachable: {exc}") from exc
        if resp.status_code != 200 or "error" in body:
            raise QueryError(f"QuestDB rejected {sql[:80]!r}: {body.get('error', resp.text[:200])}")
        cols = body.get("columns", [])
        names = [c["name"] for c in cols]
        stamps = [i for i, c in enumerate(cols) if c.get("type") in ("TIMESTAMP", "TIMESTAMP_NS")]
        rows = []
        for values in body.get("dataset", []):
            for i in stamps:
                values[i] = iso_to_ns(values[i])
            rows.append(dict(zip(names, values, strict=True)))
        return rows

    def has_table(self, name: str) -> bool:
        full = self.reader.prefix + name
        return bool(self.run(f"SELECT table_name FROM tables() WHERE table_name = '{full}'"))


class QuestDBReader:
    """Reads QuestDB over HTTP ``/exec`` (the endpoint the writer already uses); one client per session."""

    dialect = "questdb"

    def __init__(self, http_url: str, prefix: str = "", timeout_s: float = 10.0) -> None:
        self.http_url = http_url.rstrip("/")
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.where = f"QuestDB {self.http_url}" + (f" (tables {prefix}*)" if prefix else "")

    def table(self, name: str) -> str:
        return f'"{self.prefix}{name}"'

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        import httpx

        with httpx.Client(timeout=self.timeout_s) as client:
            yield _QuestSession(self, client)


def iso_to_ns(value: str | None) -> int | None:
    """QuestDB's JSON timestamp (``2024-01-01T00:00:01.500000Z``) as int ns.

    >>> iso_to_ns("2024-01-01T00:00:01.500000Z"), iso_to_ns(None)
    (1704067201500000000, None)
    """
    if value is None:
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    secs = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])


def reader_for(settings: Settings) -> Reader:
    """QuestDB when configured, else the embedded store (the same choice the features flow makes)."""
    if settings.questdb.enabled:
        return QuestDBReader(settings.questdb.http_url, settings.questdb.table_prefix)
    return DuckDBReader(settings.store.path)


# ------------------------------------------------------------------------------------------------------- poller
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
    health: tuple[Row, ...] = ()  # per (venue, symbol, kind): n, last_ts
    news: tuple[Row, ...] | None = None  # None: there is no news table

    @property
    def keys(self) -> list[str]:
        return sorted(self.features)

    def latest_window_end(self) -> int | None:
        ends = [rows[-1]["window_end"] for rows in self.features.values() if rows]
        return max(ends) if ends else None


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
    ) -> None:
        self.reader = reader
        self.width_ns = int(window_s * 1e9)
        self.feature_columns = tuple(feature_columns)
        self.quantile_columns = tuple(quantile_columns)
        self.max_windows = max_windows
        self.max_keys = max_keys
        self.lookback_ns = lookback_windows * self.width_ns
        self.polls = 0
        self.min_gap_s = 0.0  # grows when reading is slow (a big store copied per poll), so polling stays light
        self._features: dict[str, deque[Row]] = {}
        self._preds: dict[PredKey, deque[Row]] = {}
        self._last_feature: int | None = None
        self._last_pred: dict[str, int] = {}  # per model
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
                    feats = s.run(self._features_sql(s))
                    preds = [p for sql in self._predictions_sql(s) for p in s.run(sql)]
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
                old, version=old.version + 1, polled_at=time.time(), error=None,
                features={k: tuple(v) for k, v in self._features.items()},
                predictions={k: tuple(v) for k, v in self._preds.items()},
                scores=tuple(scores), health=tuple(health), news=None if news is None else tuple(news),
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
            self._snap = replace(self._snap, version=self._snap.version + 1, error=why)
        return changed

    # -- SQL ------------------------------------------------------------------------------------------------------
    def _ts(self, ns: int) -> str:
        return str(ns) if self.reader.dialect == "duckdb" else f"cast({ns // 1000} as timestamp)"

    def _since(self, s: Session, table: str, col: str, last: int | None, where: str = "") -> str:
        """Where to read from: a look-back before the last row seen, or (first poll) the buffer's span."""
        if last is not None:
            return self._ts(last - self.lookback_ns)
        top = s.run(f"SELECT max({col}) AS m FROM {self.reader.table(table)}{where}")
        m = top[0]["m"] if top else None
        return self._ts(int(m) - self.max_windows * self.width_ns) if m is not None else self._ts(0)

    def _features_sql(self, s: Session) -> str:
        cols = ", ".join(f'"{c}"' for c in ("window_start", "window_end", "venue", "symbol", *self.feature_columns))
        since = self._since(s, "features", "window_start", self._last_feature)
        return (f"SELECT {cols} FROM {self.reader.table('features')} WHERE window_start > {since} "
                f"ORDER BY window_start LIMIT {self.max_windows * self.max_keys}")

    def _predictions_sql(self, s: Session) -> list[str]:
        """One query per model: models are written by different jobs, each at its own pace."""
        base = ("issued_at", "target_time", "venue", "symbol", "model", "model_version", "horizon_steps", "value")
        cols = ", ".join(f'"{c}"' for c in (*base, *self.quantile_columns))
        t = self.reader.table("predictions")
        models = sorted(str(r["model"]) for r in s.run(f"SELECT DISTINCT model FROM {t}"))[: self.max_keys]
        out = []
        for model in models:
            is_model = " WHERE model = '" + model.replace("'", "''") + "'"
            since = self._since(s, "predictions", "issued_at", self._last_pred.get(model), is_model)
            out.append(f"SELECT {cols} FROM {t}{is_model} AND issued_at > {since} ORDER BY issued_at "
                       f"LIMIT {self.max_windows * self.max_keys}")
        return out

    def _scores_sql(self) -> str:
        t = self.reader.table("scores")
        keys = "venue, symbol, model, horizon_steps"
        if self.reader.dialect == "duckdb":
            return f"SELECT * FROM {t} QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY window_end DESC) = 1"
        return f"SELECT * FROM {t} LATEST ON window_end PARTITION BY {keys}"

    def _health_sql(self) -> str:
        return (f"SELECT venue, symbol, kind, sum(value) AS n, max(ts) AS last_ts FROM {self.reader.table('health')} "
                "GROUP BY venue, symbol, kind ORDER BY kind, venue, symbol")

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
            key = f"{r['venue']}:{r['symbol']}"
            buf = self._bounded(self._features, key)
            if buf and r["window_start"] <= buf[-1]["window_start"]:
                continue  # seen already (the look-back re-reads a few windows)
            buf.append(r)
            self._last_feature = max(self._last_feature or 0, r["window_start"])
        for p in preds:
            pkey = (f"{p['venue']}:{p['symbol']}", str(p["model"]), int(p["horizon_steps"]))
            pbuf = self._bounded(self._preds, pkey)
            if pbuf and p["issued_at"] <= pbuf[-1]["issued_at"]:
                continue
            pbuf.append(p)
            self._last_pred[pkey[1]] = max(self._last_pred.get(pkey[1], 0), p["issued_at"])

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
    """A poller for what ``settings`` configure (QuestDB, else the embedded store)."""
    from ccf.store.tables import features_table, predictions_table

    wanted = ("book_valid", "epoch", "mid", "spread", "spread_bps", "best_bid", "best_ask", "imbalance_1",
              "trade_count", "volume", "book_events", "late_trades")
    names = features_table(settings.features.depth_levels).column_names
    cols = [c for c in names if c in wanted or c.startswith(("depth_bid_", "depth_ask_"))]
    qcols = [c for c in predictions_table(settings.forecast.quantiles).column_names if c.startswith("q")]
    return Poller(reader_for(settings), window_s=settings.features.window_s, feature_columns=cols,
                  quantile_columns=qcols, max_windows=max_windows)


# ------------------------------------------------------------------------------------- one poller per server
# Here, not in dashboards/app.py: `panel serve` runs the app file afresh for every session, so only an imported
# module can hold what all sessions share.
_POLLERS: dict[str, Poller] = {}
_TASKS: dict[str, Callable[[], Any]] = {}
_LOCK = threading.Lock()


def shared_poller(settings: Settings) -> Poller:
    """The process's poller for this store (made on first use; every session gets the same one)."""
    key = reader_for(settings).where
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

    name = f"ccf-live-poll-{poller.reader.where}"
    with _LOCK:
        task = _TASKS.get(name)
        if task is None:

            async def task() -> None:
                await asyncio.to_thread(poller.poll)

            _TASKS[name] = task
    pn.state.schedule_task(name, task, period=timedelta(seconds=interval_s))
    return name

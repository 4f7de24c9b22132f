"""Bytewax sinks for what the features flow produces (:class:`ccf.engine.EngineOut`).

One sink partition writes every table (so the embedded DuckDB store has one writer); it fans out to the configured
writers: QuestDB or the embedded store, and Kafka when configured. Delivery is at-least-once with idempotent
tables: a batch is written before Bytewax commits the epoch, and a replayed batch upserts the same keys. News items
go to the ``news`` table only (``ccf.news`` already carries them), each id once (:class:`~ccf.store.high_water.HeldIds`).
Making the sink checks the store it will write (:func:`check_store`), so a wrong QuestDB URL fails while the flow
is built, in one line, not later inside the running dataflow.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from ccf.engine import EngineOut
from ccf.settings import Settings
from ccf.store.high_water import HeldIds, HighWater, Marks
from ccf.store.kafka_out import KafkaWriter, tail_marks
from ccf.store.tables import (
    HEALTH,
    NEWS,
    SCORES,
    Table,
    feature_row_values,
    feature_set_columns,
    features_table,
    news_values,
    prediction_values,
    predictions_table,
    score_values,
)

logger = logging.getLogger(__name__)


class Writer(Protocol):
    def upsert(self, table: str, rows: Sequence[dict[str, Any]]) -> int: ...

    def high_water(self, table: str, ts: str, by: Sequence[str]) -> dict[tuple[str, ...], int]: ...

    def close(self) -> None: ...


def all_tables(settings: Settings) -> list[Table]:
    return [
        features_table(settings.features.depth_levels, feature_set_columns(settings.features)),
        predictions_table(settings.forecast.quantiles),
        SCORES,
        HEALTH,
        NEWS,
    ]


def health_rows(out: EngineOut) -> list[dict[str, Any]]:
    """One row per problem and per late record (``value`` 1), so ``sum(value)`` counts them.

    Rows of the same ``(ts, venue, symbol, kind)`` differ in ``seq``, a hash of the problem's content and its
    ordinal among identical problems of the batch: deterministic, so a batch replayed after a crash upserts the same
    rows, however Bytewax splits the replay into batches (only byte-identical problems with the same time rely on
    the ordinal).

    >>> from ccf.engine import EngineOut
    >>> out = EngineOut()
    >>> out.problems += [{"ts": 5, "venue": "v", "symbol": "A", "error": "ParseError", "reason": r} for r in "xxy"]
    >>> rows = health_rows(out)
    >>> len(rows), len({(r["ts"], r["kind"], r["seq"]) for r in rows}), sum(r["value"] for r in rows)
    (3, 3, 3.0)
    >>> [r["seq"] for r in rows] == [r["seq"] for r in health_rows(out)]
    True
    """
    seen: dict[str, int] = {}
    rows = []
    for p in out.problems:
        row = {
            "ts": int(p.get("ts") or 0),
            "venue": p.get("venue", ""),
            "symbol": p.get("symbol", ""),
            "kind": p.get("error", "problem"),
            "value": float(p.get("value", 1.0)),
            "detail": str(p.get("reason") or p.get("detail") or "")[:500],
        }
        # an entry that names its own seq (the stack's role events, also written to the store directly) keeps it,
        # so both ways to the table upsert one row
        row["seq"] = int(p["seq"]) if isinstance(p.get("seq"), int) else _seq(f"{row}|{p.get('raw', '')}", seen)
        rows.append(row)
    for rec in out.late:
        ts = int(getattr(rec, "ts_event", None) or getattr(rec, "fetched", 0) or 0)
        row = {"ts": ts, "venue": getattr(rec, "venue", "news"), "symbol": getattr(rec, "symbol", "ALL"),
               "kind": "late_" + type(rec).__name__.lower(), "value": 1.0, "detail": ""}
        row["seq"] = _seq(repr(rec), seen)
        rows.append(row)
    return rows


def _seq(content: str, seen: dict[str, int]) -> int:
    """63-bit hash of ``content`` and how often the same content came before it in this batch."""
    n = seen.get(content, 0)
    seen[content] = n + 1
    digest = hashlib.blake2b(f"{n}|{content}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def check_store(settings: Settings) -> None:
    """Fail now, in one line naming the setting, if the configured store cannot be used (QuestDB unreachable,
    a URL that is not http(s), an embedded store file whose folder cannot be made or written). Raises
    :class:`ccf.errors.ConfigError`."""
    if settings.questdb.enabled:
        from ccf.store.questdb_store import check_questdb

        check_questdb(settings.questdb)
        return
    import os

    from ccf.errors import ConfigError

    folder = settings.store.path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"CCF_STORE__PATH={settings.store.path}: cannot make its folder ({exc.strerror})") from exc
    if not os.access(folder, os.W_OK) or settings.store.path.is_dir():
        raise ConfigError(f"CCF_STORE__PATH={settings.store.path}: not a file CCF can write")


class _OutputPartition(StatefulSinkPartition[EngineOut, None]):
    def __init__(self, store: Writer, kafka: KafkaWriter | None, quantiles: Sequence[float], where: str,
                 kafka_marks: dict[str, Marks] | None = None) -> None:
        self.store = store
        self.kafka = kafka
        self.quantiles = tuple(quantiles)
        self.where = where
        self.written = {"features": 0, "predictions": 0, "scores": 0, "health": 0, "news": 0}
        self.symbols: set[str] = set()
        self.held = HighWater.load(store.high_water)
        self.news_ids = HeldIds.load(store.high_water)
        self.sent = self.held.combined(kafka_marks or {})  # what Kafka holds: the store's, or a newer committed batch

    def write_batch(self, items: list[EngineOut]) -> None:
        quantiles = self.quantiles
        made: dict[str, list[tuple[Any, dict[str, Any]]]] = {
            "features": [(r, feature_row_values(r)) for o in items for r in o.rows],
            "predictions": [(p, prediction_values(p, quantiles)) for o in items for p in o.predictions],
            "scores": [(s, score_values(s)) for o in items for s in o.scores],
        }
        health = [h for o in items for h in health_rows(o)]
        self.symbols.update(f"{r.venue}:{r.symbol}" for o in items for r in o.rows)
        if self.kafka is not None:  # Kafka first (one transaction): the store's newest rows tell a restart what is done
            for table, pairs in made.items():
                self.kafka.send(table, [rec for rec, _ in self.sent.keep(table, pairs)])
            self.kafka.flush()
        for table, pairs in made.items():
            self.written[table] += self.store.upsert(table, [v for _, v in self.held.keep(table, pairs)])
        self.written["health"] += self.store.upsert("health", health)
        # news: once per id (not sent to Kafka: ccf.news already carries every item)
        news = self.news_ids.keep([(n, news_values(n, s)) for o in items for n, s in o.news])
        self.written["news"] += self.store.upsert("news", [v for _, v in news])

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        w = self.written
        # the run's one-line summary (stdout: it is the job's result, not a log record)
        print(
            f"ccf features: {w['features']} feature rows, {w['predictions']} predictions, {w['scores']} scores, "
            f"{w['health']} health rows, {w['news']} news items for {len(self.symbols)} symbols ({', '.join(sorted(self.symbols))}) "
            f"-> {self.where}{_held_note({**self.held.dropped, 'news': self.news_ids.dropped})}",
            flush=True,
        )
        self.store.close()
        if self.kafka is not None:
            self.kafka.close()


def _held_note(dropped: dict[str, int]) -> str:
    if not any(dropped.values()):
        return ""
    return " (already in the store, not rewritten: " + ", ".join(f"{n} {t}" for t, n in dropped.items() if n) + ")"


def open_store(settings: Settings) -> Writer:
    """QuestDB when configured, else the embedded DuckDB file."""
    tables = all_tables(settings)
    if settings.questdb.enabled:
        from ccf.store.questdb_store import QuestDBWriter

        return QuestDBWriter.from_settings(settings.questdb, tables)
    from ccf.store.duckdb_store import DuckDBStore

    return DuckDBStore(settings.store.path, tables)


class OutputSink(FixedPartitionedSink[EngineOut, None]):
    """Every output of the features flow, through one partition. Items are ``(key, EngineOut)``.

    Made with ``check=True`` (the default) it checks the store first (:func:`check_store`).
    """

    def __init__(self, settings: Settings, *, check: bool = True) -> None:
        self.settings = settings
        if check:
            check_store(settings)

    def list_parts(self) -> list[str]:
        return ["outputs"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OutputPartition:
        s = self.settings
        kafka, marks = None, None
        where = f"QuestDB {s.questdb.http_url}" if s.questdb.enabled else f"embedded store {s.store.path}"
        if s.kafka.enabled:
            k = s.kafka
            # one id per job (prefix + group): a restarted job fences its killed predecessor's open transaction
            kafka = KafkaWriter(s, transactional_id=f"{k.client_id}-features-{k.topic_prefix}{k.group_id}"
                                if k.exactly_once else None)
            marks = tail_marks(s)
            where += f" + Kafka {s.kafka.bootstrap_servers}"
        return _OutputPartition(open_store(s), kafka, s.forecast.quantiles, where, marks)


def write_health(settings: Settings, rows: Sequence[dict[str, Any]], what: str = "health rows",
                 timeout_s: float = 10.0) -> bool:
    """Upsert ``rows`` into the store's health table, best effort (a side channel, such as a failed retrain or a
    restarted role, must never fail for it): a store that cannot be written is logged and False is returned."""
    quick = settings.model_copy(update={"questdb": settings.questdb.model_copy(update={"retry_timeout_s": timeout_s})})
    try:
        store = open_store(quick)
        try:
            store.upsert("health", list(rows))
        finally:
            store.close()
    except Exception as exc:
        logger.warning("could not write %s to the health table: %s", what, " ".join(str(exc).split())[:300])
        return False
    return True

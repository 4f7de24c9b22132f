"""The main job: ``python -m bytewax.run flows.features``.

Market records in, per symbol: exact book, event-time windows, features, online baselines, live scores; out to
QuestDB (or the embedded DuckDB store) and Kafka. Sources, by settings:

- Kafka raw topics (``ccf.book``, ``ccf.trades``, ``ccf.news``) when ``CCF_KAFKA__BOOTSTRAP_SERVERS`` is set;
- otherwise in process: the seeded synthetic venue (default, offline), or capture replay
  (``CCF_VENUES__SOURCE=replay`` with ``CCF_VENUES__REPLAY_FILES``), and the news feeds when
  ``CCF_NEWS__ENABLED`` is set.

Each news item is scored once (sentiment, :mod:`ccf.news.sentiment`), written once to the ``news`` table, and
routed to the symbols whose base asset it names (``news_count``, ``news_sentiment`` of their windows).

``CCF_STOP_AFTER`` ends the sources after that many seconds of event time; the run then stops cleanly and prints a
one-line summary. The module builds, it does not run: ``flow`` is made on first access, and tests call
:func:`build_flow` with their own source and sink.
"""

from __future__ import annotations

import logging
import pathlib
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from ccf.engine import EngineConfig, EngineOut, SymbolEngine
from ccf.features.news import route_news, scored
from ccf.features.windows import MAX_WAITING_NEWS
from ccf.settings import Settings
from ccf.sources import DLQ_KEY, NEWS_KEY

logger = logging.getLogger(__name__)

BookFactory = Callable[[str, str], Any]


_State = SymbolEngine | list[Any] | None  # the engine, or the news that came before the key's first market record


class _EngineLogic(StatefulBatchLogic[list[Any], EngineOut, _State]):
    """A few lines of Bytewax around :class:`SymbolEngine` (made on the key's first market record; news routed to
    the key before it wait, at most :data:`~ccf.features.windows.MAX_WAITING_NEWS`)."""

    def __init__(self, make: Callable[[Any], SymbolEngine], state: _State) -> None:
        self.make = make
        self.engine = state if isinstance(state, SymbolEngine) else None
        self.waiting: list[Any] = list(state) if isinstance(state, list) else []

    def on_batch(self, values: list[list[Any]]) -> tuple[list[EngineOut], bool]:
        records = values[0] if len(values) == 1 else [r for chunk in values for r in chunk]
        if self.engine is None:
            first = _first_market(records)
            if first is None:  # only news so far: nothing to make the engine from, no window to count them in
                self.waiting += records
                over = len(self.waiting) - MAX_WAITING_NEWS
                if over <= 0:
                    return [], StatefulBatchLogic.RETAIN
                late, self.waiting = self.waiting[:over], self.waiting[over:]
                return [EngineOut(late=_bare(late))], StatefulBatchLogic.RETAIN
            self.engine = self.make(first)
            records, self.waiting = [*self.waiting, *records], []
        out = self.engine.on_batch(records)
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[EngineOut], bool]:
        from ccf import stopping

        if stopping.requested():  # stopped, not the end of the input: keep the open windows for the next run
            return [], StatefulBatchLogic.RETAIN
        if self.engine is None:  # the input ended before the key's first market record: its news are late
            late, self.waiting = _bare(self.waiting), []
            return ([EngineOut(late=late)] if late else []), StatefulBatchLogic.RETAIN
        out = self.engine.on_eof()
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> _State:
        if self.engine is None:
            return list(self.waiting) or None
        # the engine keeps mutating after this returns: hand Bytewax a frozen copy
        frozen: SymbolEngine = pickle.loads(pickle.dumps(self.engine, pickle.HIGHEST_PROTOCOL))
        return frozen


def _bare(items: list[Any]) -> list[Any]:
    """Records without the ``extra`` beside them (a news item's sentiment)."""
    return [i[0] if type(i) is tuple else i for i in items]


def _first_market(records: list[Any]) -> Any | None:
    """The first record that names its venue and symbol (not a news item), without its ``extra``."""
    for item in records:
        rec = item[0] if type(item) is tuple else item
        if getattr(rec, "symbol", None) is not None:
            return rec
    return None


def _dead_letters(items: list[Any]) -> EngineOut:
    """What could not be used, as problems for the health table and the dead-letter topic."""
    from ccf.errors import DataError

    out = EngineOut()
    for item in items:
        if isinstance(item, dict):  # a dead letter or health entry from the live connector
            d: dict[str, Any] = dict(item)
            d.setdefault("error", d.get("kind", "health"))
        elif isinstance(item, DataError):
            d = item.to_dict()
        else:  # a raw frame of a venue without a parser
            d = {"error": "Unparsed", "venue": getattr(item, "venue", ""), "symbol": "",
                 "reason": "no parser for this venue", "raw": str(getattr(item, "payload", item))[:2000]}
        d.setdefault("ts", int(getattr(item, "ts_recv", 0) or 0))
        out.problems.append(d)
    return out


def _route(chunk: tuple[str, list[Any]], routes: Sequence[tuple[str, str]]) -> list[tuple[str, Any]]:
    """A market chunk as it is; a news chunk scored once (:func:`ccf.features.news.scored`): one item for the news
    table, then its items for the symbols they name. One step for both, so a symbol's engine gets news where the
    source put them among its records, not after them (news late for windows that closed meanwhile)."""
    key, items = chunk
    if key != NEWS_KEY:
        return [chunk]
    pairs = scored(items)
    return [(NEWS_KEY, EngineOut(news=pairs)), *route_news(pairs, routes)]


def _book_factory(venue: str, symbol: str) -> Any:
    from ccf.features.bookkeeper import SyncedBook

    return SyncedBook(venue, symbol)


def build_flow(
    settings: Settings | None = None,
    source: Source[Any] | None = None,
    sink: Sink[Any] | None = None,
    *,
    book_factory: BookFactory = _book_factory,
) -> Dataflow:
    """The features dataflow. ``source`` yields ``("venue:SYMBOL", [records])`` chunks; ``sink`` takes
    ``("venue:SYMBOL", EngineOut)``. Both default to what ``settings`` configure."""
    if settings is None:
        from ccf.settings import load_settings

        settings = load_settings()
    config = EngineConfig.from_settings(settings)

    def make(first: Any) -> SymbolEngine:
        return SymbolEngine(first.venue, first.symbol, book_factory(first.venue, first.symbol), config)

    flow = Dataflow("ccf_features")
    chunks = op.input("records", flow, source if source is not None else make_source(settings))
    if source is None and settings.news.enabled and not settings.kafka.enabled:
        from ccf.news.source import NewsSource

        news = op.input("news", flow, NewsSource.from_settings(settings.news, stop_after_s=settings.stop_after))
        chunks = op.merge("with_news", chunks, op.map("news_chunk", news, lambda item: (NEWS_KEY, [item])))
    split = op.branch("usable", chunks, lambda kv: kv[0] != DLQ_KEY)
    routes = [(settings.venues.source, s) for s in settings.venues.symbols]
    routed = op.flat_map("route_news", split.trues, lambda kv: _route(kv, routes))
    news_table = op.branch("news_table", routed, lambda kv: kv[0] == NEWS_KEY)
    outs = op.stateful_batch("engine", news_table.falses, lambda resume: _EngineLogic(make, resume))
    dead = op.map_value("dead_letters", split.falses, _dead_letters)
    op.output("outputs", op.merge("all_outputs", outs, dead, news_table.trues),
              sink if sink is not None else make_sink(settings))
    return flow


def make_source(settings: Settings) -> Source[Any]:
    """The source the settings ask for (see the module docstring)."""
    from ccf.sources import RecordSource

    v = settings.venues
    if settings.kafka.enabled:
        from ccf.kafka_source import raw_topics_source

        return raw_topics_source(settings)
    if v.source == "synthetic":
        from ccf.synthetic import SyntheticVenue

        def synthetic(symbol: str) -> Callable[[], Iterator[Any]]:
            def gen() -> Iterator[Any]:
                venue = SyntheticVenue([symbol], seed=v.seed)
                while True:
                    batch = venue.next_batch(1000)
                    if not batch:
                        return
                    yield from batch

            return gen

        parts = {f"synthetic:{s}": synthetic(s) for s in v.symbols}
        return RecordSource(parts, stop_after_s=settings.stop_after, pace=v.speed)
    if v.source == "replay":
        from ccf.capture.readers import read_records

        files = list(v.replay_files)
        if not files:
            from ccf.errors import ConfigError

            raise ConfigError("CCF_VENUES__SOURCE=replay needs CCF_VENUES__REPLAY_FILES (a JSON list of paths)")
        from ccf.capture.readers import detect_format

        for path in files:  # a missing, empty or unknown file fails now, in one line, not inside the running flow
            detect_format(pathlib.Path(path))
        return RecordSource({"replay": lambda: iter(read_records(files))}, stop_after_s=settings.stop_after,
                            pace=v.speed)
    # a live venue in process: the ingest flow's connector (websocket, parse, book checks, REST resyncs)
    from ccf.sources import ChunkingSource
    from flows.ingest import make_source as ingest_source

    return ChunkingSource(ingest_source(settings), _ingest_chunks)


def _ingest_chunks(batches: list[Any]) -> list[Any]:
    """Ingest batches as keyed chunks: records by symbol; dead letters and health entries to the dead-letter key."""
    from ccf.sources import chunk_by_key

    records = [r for b in batches for r in b.records]
    other = [d for b in batches for d in (*b.dead, *b.health)]
    chunks = chunk_by_key(records)
    if other:
        chunks.append((DLQ_KEY, other))
    return chunks


def make_sink(settings: Settings) -> Sink[Any]:
    from ccf.store.sinks import OutputSink

    return OutputSink(settings)


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run flows.features` looks up `flow`: build it then, from the environment, never on import.
    if name == "flow":
        from ccf.entry import from_environment

        return from_environment(build_flow)
    raise AttributeError(name)

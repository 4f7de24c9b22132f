"""What the store already holds, so a restarted features job never rewrites a row.

A features job restarted without its recovery state (a new container, a wiped volume, a changed flow) starts at its
consumer group's committed offsets, or at the beginning of the topics, with an empty book and empty windows: the
rows it recomputes for windows that the store already holds would be worse (no book until it syncs, baselines
without their history) or, at best, the same. So the sink reads, when it starts, the newest key time per
``(venue, symbol[, model])`` of each table it writes, and drops every row at or before it — from the store and from
Kafka alike, so downstream consumers get no second, different copy either. A job resumed from recovery state
recomputes only the rows since its last snapshot: equal to those held, dropped just the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

GUARDED: dict[str, tuple[str, tuple[str, ...]]] = {
    "features": ("window_start", ("venue", "symbol")),
    "predictions": ("issued_at", ("venue", "symbol", "model")),
    "scores": ("window_end", ("venue", "symbol", "model")),
}
"""Table -> (its key time column, the columns one writer's series is told apart by)."""

Marks = dict[tuple[str, ...], int]  # series -> newest key time held, in microseconds (QuestDB's precision)


class HighWater:
    """The newest key time held per series and table; :meth:`keep` drops what is not newer."""

    def __init__(self, marks: dict[str, Marks]) -> None:
        self.marks = marks
        self.dropped = dict.fromkeys(GUARDED, 0)

    @classmethod
    def load(cls, read: Callable[[str, str, Sequence[str]], Marks]) -> HighWater:
        """``read(table, time column, series columns)`` gives a table's marks (the store's ``high_water``)."""
        marks = {table: read(table, ts, by) for table, (ts, by) in GUARDED.items()}
        held = {t: len(m) for t, m in marks.items() if m}
        if held:
            logger.info("the store already holds rows for %s series (per table): newer rows only are written", held)
        return cls(marks)

    def combined(self, other: dict[str, Marks]) -> HighWater:
        """The newer of these marks and ``other``'s, per table and series."""
        marks = {t: dict(m) for t, m in self.marks.items()}
        for table, m in other.items():
            mine = marks.setdefault(table, {})
            for key, t in m.items():
                if t > mine.get(key, -1):
                    mine[key] = t
        return HighWater(marks)

    def keep(self, table: str, pairs: list[tuple[Any, dict[str, Any]]]) -> list[tuple[Any, dict[str, Any]]]:
        """The ``(record, column dict)`` pairs of ``table`` newer than what the store held when the job started."""
        marks = self.marks.get(table)
        if not marks:
            return pairs
        ts, by = GUARDED[table]
        kept = [(r, v) for r, v in pairs if int(v[ts]) // 1000 > marks.get(tuple(str(v[c]) for c in by), -1)]
        self.dropped[table] += len(pairs) - len(kept)
        return kept


class HeldIds:
    """The ids the ``news`` table holds, so a news item is written once however often it comes.

    Read once when the sink starts (the store's ``high_water`` of ``news`` by ``id``), then grown by what is
    written; the newest ``limit`` ids are kept (news is a trickle: that is months of it). An item whose id is held
    is dropped: replayed from Kafka after a restart, fetched again by a poller that lost its seen-set (a new
    ``fetched``, so the table's own keys would not catch it), or carried by a second feed.

    >>> held = HeldIds(["a"], limit=2)
    >>> [i for i, _ in held.keep([("a", {"id": "a"}), ("b", {"id": "b"}), ("b", {"id": "b"})])], held.dropped
    (['b'], 2)
    >>> len(held.keep([("c", {"id": "c"})])), sorted(held.ids)  # the oldest, "a", fell out
    (1, ['b', 'c'])
    """

    def __init__(self, ids: Iterable[str] = (), limit: int = 100_000) -> None:
        self.limit = limit
        self.ids: dict[str, None] = {}
        self.dropped = 0
        self._add(ids)

    @classmethod
    def load(cls, read: Callable[[str, str, Sequence[str]], Marks], limit: int = 100_000) -> HeldIds:
        marks = read("news", "fetched", ("id",))
        if marks:
            logger.info("the store already holds %s news items: new ids only are written", len(marks))
        return cls((key[0] for key, _ in sorted(marks.items(), key=lambda kv: kv[1])), limit)

    def keep(self, pairs: list[tuple[Any, dict[str, Any]]]) -> list[tuple[Any, dict[str, Any]]]:
        """The ``(record, news row)`` pairs whose id is not held yet (the first of equal ids), now held."""
        kept = []
        for rec, row in pairs:
            if row["id"] in self.ids:
                self.dropped += 1
                continue
            self._add([row["id"]])
            kept.append((rec, row))
        return kept

    def _add(self, ids: Iterable[str]) -> None:
        for i in ids:
            self.ids[i] = None
        while len(self.ids) > self.limit:
            del self.ids[next(iter(self.ids))]

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
from collections.abc import Callable, Sequence
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

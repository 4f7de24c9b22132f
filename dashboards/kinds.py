"""The ``health`` table's kinds, grouped the way the app and the Grafana "Pipeline health" dashboard show them.

Who writes which kind (``ts, venue, symbol, kind, value, detail, seq``; ``value`` 1 per event unless said):

- the features flow's engine: book problems that force a resync (``SequenceGapError``, ``ChecksumError``,
  ``CrossedBookError``), records it cannot use (``ParseError``, ``Unparsed``), records behind the watermark
  (``late_trade``, ``late_...``);
- the features flow reading a venue in process: the websocket source's kinds (``disconnected``, ``stalled``,
  ``max_age``, ``worker_died``, ``failed``, and the quiet ones ``connecting``, ``connected``, ``subscribed``,
  ``backoff``...) and the book sync's ``resync`` (:mod:`ccf.ingest.health`);
- the features flow reading Kafka: ``consumer_lag`` every few seconds per topic-partition (venue ``kafka``, symbol
  ``topic:partition``, ``value`` = messages behind the end; ``ccf.kafka_source``, its partitions' ``lag()``);
- ``ccf stack``'s event listener: ``role_died``, ``role_backoff``, ``role_fatal``, ``role_restarted`` (venue
  ``stack``); the trainer: ``retrain_failed`` (venue ``trainer``).

``flows.ingest`` publishes its own health entries (reconnects, resyncs, its lag) on the Kafka topic ``ccf.health``
only: no job copies that topic into the table, so reconnects of a separate ingest job are not counted here.
"""

from __future__ import annotations

RECONNECTS = ("disconnected", "stalled", "max_age", "worker_died", "failed")
"""A connection ended (and was reopened, except after ``failed``)."""
RESYNCS = ("SequenceGapError", "ChecksumError", "CrossedBookError", "resync")
"""A book was found broken and waits for a new snapshot."""
DEAD_LETTERS = ("ParseError", "Unparsed")
"""Input that could not be used (kept in the dead-letter topic with its raw payload)."""
CONSUMER_LAG = "consumer_lag"
"""Messages the features flow's Kafka consumer is behind the end, per topic-partition (a level, not a count)."""
RESTARTS = ("role_died", "role_backoff", "role_fatal", "role_restarted", "retrain_failed")
"""Processes of the stack that ended, were restarted or gave up; failed retrains."""

GROUPS: dict[str, tuple[str, ...]] = {"reconnects": RECONNECTS, "resyncs": RESYNCS, "dead letters": DEAD_LETTERS,
                                      "restarts": RESTARTS}


def sql_list(kinds: tuple[str, ...]) -> str:
    """``kinds`` as an SQL list.

    >>> sql_list(("a", "b"))
    "('a', 'b')"
    """
    return "(" + ", ".join(f"'{k}'" for k in kinds) + ")"


def group_of(kind: str) -> str:
    """The group a kind is shown in (``other`` for the rest, ``late records`` for ``late_*``).

    >>> group_of("stalled"), group_of("late_trade"), group_of(CONSUMER_LAG), group_of("snapshot")
    ('reconnects', 'late records', 'consumer lag', 'other')
    """
    if kind == CONSUMER_LAG:
        return "consumer lag"
    if kind.startswith("late_"):
        return "late records"
    return next((g for g, kinds in GROUPS.items() if kind in kinds), "other")

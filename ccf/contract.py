"""The contract of CCF's Kafka topics for downstream consumers: one JSON Schema per topic.

Topic names are relative to ``CCF_KAFKA__TOPIC_PREFIX`` (default ``ccf.``). The record topics carry
:func:`ccf.schemas.encode` JSON, tagged structs whose ``type`` field names the schema version (``trade.v1``); their
schemas are ``msgspec.json.schema`` of the union of the structs each topic carries, so they cannot drift from
:mod:`ccf.schemas`. Which struct goes where is :data:`RECORD_TOPICS`: the raw topics as
:data:`ccf.ingest.producer.RAW_TOPICS` routes them (the ingest flow), the outputs as the features job's sink writes
them (:mod:`ccf.store.sinks`, :mod:`ccf.store.kafka_out`). ``health`` and ``dlq`` carry plain JSON objects
(:mod:`ccf.ingest.health`); their schemas are written here by hand and name the common fields every entry has.

Every schema leaves unknown fields allowed: a reader must ignore fields it does not know (``msgspec`` structs do:
``forbid_unknown_fields=False``), and refuse a ``type`` whose ``.vN`` it does not know. ``docs/consumers.md`` is the
prose half of the contract; ``docs/schemas/<topic>.schema.json`` are these schemas, written by
``ccf schema`` (``--out docs/schemas``; a unit test fails when they are stale).

>>> schemas = topic_schemas()
>>> list(schemas)
['book', 'trades', 'klines', 'news', 'features', 'predictions', 'scores', 'health', 'dlq']
>>> sorted(schemas["book"]["discriminator"]["mapping"])
['book_delta.v1', 'book_snapshot.v1', 'book_top.v1']
>>> schemas["dlq"]["required"]
['ts', 'conn', 'error', 'venue', 'symbol', 'reason', 'raw']
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from ccf.schemas import BookDelta, BookSnapshot, BookTop, FeatureRow, Kline, NewsItem, Prediction, Score, Trade

JSON_SCHEMA: Final = "https://json-schema.org/draft/2020-12/schema"

RAW: Final = ("book", "trades", "klines", "news")
"""Written by the ingest flow (``flows.ingest``) through an idempotent producer."""

OUTPUTS: Final = ("features", "predictions", "scores")
"""Written by the features job's sink in Kafka transactions: read them with ``isolation.level=read_committed``."""

ENTRIES: Final = ("health", "dlq")
"""Plain JSON objects of the ingest flow."""

TOPICS: Final = (*RAW, *OUTPUTS, *ENTRIES)

RECORD_TOPICS: Final[dict[str, tuple[type[Any], ...]]] = {
    "book": (BookSnapshot, BookDelta, BookTop),
    "trades": (Trade,),
    "klines": (Kline,),
    "news": (NewsItem,),
    "features": (FeatureRow,),
    "predictions": (Prediction,),
    "scores": (Score,),
}
"""Topic -> the structs its values are (a consumer decodes any of them with :func:`ccf.schemas.decode`)."""

KEYS: Final[dict[str, str]] = {
    **dict.fromkeys(RECORD_TOPICS, "venue:SYMBOL (ccf.schemas.record_key)"),
    "news": "news:ALL",
    "health": "venue:SYMBOL, venue:* for a whole connection, kafka:* for producer retries",
    "dlq": "venue:SYMBOL, venue:* when the symbol is not known",
}
"""Topic -> what its message keys are (UTF-8)."""

WS_KINDS: Final = ("connecting", "connected", "subscribed", "disconnected", "stalled", "max_age", "backoff",
                   "rest_failed", "worker_died", "failed", "ended")
"""Health kinds of a websocket connection (:data:`ccf.wsource_types.HealthKind`)."""

HEALTH_KINDS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {
    WS_KINDS: ("session", "detail", "attempt"),
    ("resync",): ("reason", "detail", "epoch"),
    ("snapshot",): ("last_update_id", "event", "epoch", "valid"),
    ("snapshot_failed",): ("detail", "retry_in_s"),
    ("lag",): ("frames", "records", "queue_ms", "venue_ms", "books_valid", "books", "dead_letters", "resyncs"),
    ("kafka_retry",): ("failed", "rounds"),
}
"""Health kinds -> the fields every entry of those kinds has (:mod:`ccf.ingest.health`, :mod:`ccf.ingest.producer`)."""


def _record_schema(topic: str) -> dict[str, Any]:
    types = RECORD_TOPICS[topic]
    hint = functools.reduce(operator.or_, types)
    body = msgspec.json.schema(hint)
    versions = ", ".join(str(t.__struct_config__.tag) for t in types)
    head = {"$schema": JSON_SCHEMA, "title": f"{topic} (value)",
            "description": f"A {' | '.join(t.__name__ for t in types)} record ({versions}) as "
                           "ccf.schemas.encode writes it: JSON tagged by its `type` field. Key: "
                           f"{KEYS[topic]}. Readers ignore fields they do not know."}
    return {**head, **body}


def _of(json_type: str, description: str = "") -> dict[str, str]:
    return {"type": json_type, "description": description} if description else {"type": json_type}


def _health_schema() -> dict[str, Any]:
    integer, string, number = _of("integer"), _of("string"), _of("number")
    properties: dict[str, Any] = {
        "ts": _of("integer", "wall-clock time the entry was made, UTC nanoseconds since the epoch"),
        "kind": {"type": "string", "description": "what happened; readers ignore kinds they do not know"},
        "venue": string,
        "symbol": {"type": "string", "description": "BASE-QUOTE, or empty for a whole connection"},
        "conn": {"type": "string", "description": "the connection (or `kafka` for producer retries)"},
        "session": integer, "detail": string, "attempt": integer,
        "reason": {"type": "string", "description": "resync: GAP, CROSSED, CHECKSUM, new_session, snapshot_too_old"},
        "epoch": integer, "last_update_id": integer, "event": string, "valid": {"type": "boolean"},
        "retry_in_s": {"type": ["number", "null"], "description": "null: a request is already queued"},
        "frames": integer, "records": integer, "queue_ms": number, "venue_ms": number, "books_valid": integer,
        "books": integer, "dead_letters": integer, "resyncs": integer,
        "failed": integer, "rounds": integer,
    }
    per_kind = [
        {"if": {"properties": {"kind": {"enum": list(kinds)}}, "required": ["kind"]},
         "then": {"required": list(fields)}}
        for kinds, fields in HEALTH_KINDS.items()
    ]
    return {
        "$schema": JSON_SCHEMA,
        "title": "health (value)",
        "description": "A health entry of the ingest flow (ccf.ingest.health): a JSON object with ts, kind, venue, "
                       f"symbol and conn, plus the fields of its kind. Key: {KEYS['health']}. Readers ignore fields "
                       "and kinds they do not know.",
        "type": "object",
        "properties": properties,
        "required": ["ts", "kind", "venue", "symbol", "conn"],
        "allOf": per_kind,
    }


def _dlq_schema() -> dict[str, Any]:
    string = _of("string")
    return {
        "$schema": JSON_SCHEMA,
        "title": "dlq (value)",
        "description": "A dead letter of the ingest flow: ccf.errors.DataError.to_dict() (error, venue, symbol, "
                       f"reason, raw) plus ts and conn (ccf.ingest.health.dead_letter). Key: {KEYS['dlq']}. Readers "
                       "ignore fields they do not know.",
        "type": "object",
        "properties": {
            "ts": {"type": "integer", "description": "receipt time of what could not be used, UTC nanoseconds"},
            "conn": {"type": "string", "description": "the connection it came from"},
            "error": {"type": "string", "description": "the DataError class: ParseError, BookError, ..."},
            "venue": string,
            "symbol": {"type": "string", "description": "BASE-QUOTE, or empty when not known"},
            "reason": string,
            "raw": {"type": "string", "description": "the payload as received (bytes decoded as UTF-8, replaced)"},
        },
        "required": ["ts", "conn", "error", "venue", "symbol", "reason", "raw"],
    }


def topic_schemas() -> dict[str, dict[str, Any]]:
    """Topic name (relative to the prefix) -> the JSON Schema of its message values, in :data:`TOPICS` order."""
    out = {topic: _record_schema(topic) for topic in RECORD_TOPICS}
    out["health"] = _health_schema()
    out["dlq"] = _dlq_schema()
    return {topic: out[topic] for topic in TOPICS}


def schema_file(topic: str) -> str:
    """The file name of a topic's schema: ``<topic>.schema.json``."""
    return f"{topic}.schema.json"


def schema_texts() -> dict[str, str]:
    """File name -> file text of every topic's schema (indented JSON, one newline at the end)."""
    return {schema_file(t): json.dumps(s, indent=2, ensure_ascii=False) + "\n" for t, s in topic_schemas().items()}


def write_schemas(out_dir: Path) -> list[Path]:
    """Write every topic's schema under ``out_dir`` (made if missing); returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_texts().items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(out_dir: Path) -> list[str]:
    """The schema files under ``out_dir`` that are missing or differ from what the code generates."""
    return [name for name, text in schema_texts().items()
            if not (out_dir / name).is_file() or (out_dir / name).read_text(encoding="utf-8") != text]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ccf.contract --out docs/schemas [--check]`` (the same as ``ccf schema``)."""
    parser = argparse.ArgumentParser(prog="python -m ccf.contract", description="Write the JSON Schema of every "
                                     "topic CCF writes to Kafka.")
    parser.add_argument("--out", type=Path, required=True, help="folder for the <topic>.schema.json files")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is missing or stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: {args.out / name} (regenerate: python -m ccf.contract --out {args.out})")
        return 1 if stale else 0
    for path in write_schemas(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

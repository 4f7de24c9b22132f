"""A downstream consumer of CCF's outputs: ``ccf.predictions`` and ``ccf.scores`` (and ``ccf.features`` when asked),
one printed line per record.

    python examples/consumer.py --bootstrap 127.0.0.1:9092 --from-beginning --max-messages 20
    python examples/consumer.py --topics predictions,scores,features

The contract it relies on is ``docs/consumers.md``: the features job writes these topics in Kafka transactions, so the
consumer reads with ``isolation.level=read_committed`` (it never sees a batch that was aborted, or one still open);
values are :func:`ccf.schemas.encode` JSON that :func:`ccf.schemas.decode` turns back into
:class:`~ccf.schemas.Prediction`, :class:`~ccf.schemas.Score` or :class:`~ccf.schemas.FeatureRow`, ignoring fields this version does not know.
A value that does not decode (another producer's, a newer ``type`` version) is reported on stderr and skipped.

It commits no offsets: each run starts where ``auto.offset.reset`` says, at the end of the topics, or at their
beginning with ``--from-beginning``. ``--max-messages N`` stops after N printed records.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaException

from ccf.schemas import FeatureRow, Prediction, Record, Score, decode, feature

TOPICS = ("predictions", "scores")


def _time(ns: int) -> str:
    """UTC nanoseconds as ISO 8601 with milliseconds: ``2024-08-08T23:54:20.000Z``."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe(record: Record) -> str:
    """One line for one record."""
    if isinstance(record, FeatureRow):
        return (f"features {record.venue}:{record.symbol} {_time(record.window_start)} "
                f"window_s={(record.window_end - record.window_start) / 1e9:g} set={record.feature_set} "
                f"book_valid={record.book_valid} n={len(record.features)} mid={feature(record, 'mid'):.10g}")
    if isinstance(record, Prediction):
        bands = "".join(f" q{q}={v:.6g}" for q, v in sorted(record.quantiles.items(), key=lambda kv: float(kv[0])))
        return (f"prediction {record.venue}:{record.symbol} {record.model}@{record.model_version} "
                f"h={record.horizon_steps} ({record.horizon_s:g} s) issued_at={_time(record.issued_at)} "
                f"target_time={_time(record.target_time)} value={record.value:.6g}{bands}")
    if isinstance(record, Score):
        return (f"score {record.venue}:{record.symbol} {record.model} h={record.horizon_steps} "
                f"window_end={_time(record.window_end)} n={record.n} mae={record.mae:.6g} "
                f"skill={_maybe(record.skill)} coverage={_maybe(record.coverage)}")
    return f"{type(record).__name__} (not expected on these topics)"


def _maybe(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def consumer_config(bootstrap: str, group: str, from_beginning: bool) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "isolation.level": "read_committed",  # the outputs are transactional: committed batches only
        "enable.auto.commit": False,  # a printer: nothing to resume
        "auto.offset.reset": "earliest" if from_beginning else "latest",
    }


def run(bootstrap: str, prefix: str, *, from_beginning: bool, max_messages: int | None, group: str,
        topics: Sequence[str] = TOPICS) -> int:
    consumer = Consumer(consumer_config(bootstrap, group, from_beginning))
    consumer.subscribe([prefix + t for t in topics])
    printed = 0
    try:
        while max_messages is None or printed < max_messages:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                print(f"kafka: {err.str()}", file=sys.stderr, flush=True)  # e.g. a topic that does not exist yet
                continue
            try:
                record = decode(msg.value() or b"")
            except msgspec.DecodeError as exc:
                print(f"skipped {msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}", file=sys.stderr, flush=True)
                continue
            print(describe(record), flush=True)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print CCF's predictions and scores (or feature rows) from Kafka.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers (host:port,...)")
    parser.add_argument("--prefix", default="ccf.", help="CCF's topic prefix (CCF_KAFKA__TOPIC_PREFIX)")
    parser.add_argument("--from-beginning", action="store_true", help="start at the beginning of the topics")
    parser.add_argument("--max-messages", type=int, default=None, metavar="N", help="stop after N records")
    parser.add_argument("--topics", default=",".join(TOPICS),
                        help="comma-separated topics without the prefix: predictions, scores, features")
    parser.add_argument("--group", default=None, help="consumer group id (default: a fresh one per run)")
    args = parser.parse_args(argv)
    group = args.group or f"ccf-example-{uuid.uuid4().hex[:12]}"
    return run(args.bootstrap, args.prefix, from_beginning=args.from_beginning, max_messages=args.max_messages,
               group=group, topics=[t.strip() for t in args.topics.split(",") if t.strip()])


if __name__ == "__main__":
    raise SystemExit(main())

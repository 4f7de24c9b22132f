"""The Kafka topic contract: the published schema files are the code's, and what CCF writes validates against them.

Records come from real data: the first few thousand records of a Binance ETHUSDT capture (books, tops, trades),
Binance Data Vision klines, a CoinDesk RSS document, and the features flow run in process over the capture slice
(feature rows, predictions, scores: what ``ccf backtest`` runs, collected as structs instead of Parquet). Health and
dead-letter entries are made by the ingest code itself (its book sync fed with the capture, its lag meter, its
producer's retry report, its dead letter of a truncated frame). Validation is ``jsonschema`` (Draft 2020-12).
"""

from __future__ import annotations

import gzip
import itertools
import json
import typing
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from ccf import contract, schemas
from ccf.schemas import BookDelta, BookSnapshot, FeatureRow, Prediction, Score, decode, encode
from tests.datafiles import data_file
from tests.fakes import FakeMessage

ROOT = Path(__file__).resolve().parents[2]
TOPICS_DIR = ROOT / "docs" / "schemas"
CAPTURE = "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz"
KLINES = "binance_spot_btcusdt_1m_klines/BTCUSDT-1m-2024-12-22.csv.gz"
RSS = "rss_feeds/crypto_news/coindesk_rss_2023-03-13.xml"
SLICE = 5000


def _validator(topic: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(contract.topic_schemas()[topic])


def _topic_of(record: schemas.Record) -> str:
    (topic,) = [t for t, types in contract.RECORD_TOPICS.items() if type(record) in types]
    return topic


@pytest.fixture(scope="module")
def capture_items() -> list[Any]:
    from ccf.capture.readers import read_records

    return list(itertools.islice(read_records([data_file(CAPTURE)], with_extra=True), SLICE))


@pytest.fixture(scope="module")
def records(capture_items: list[Any]) -> list[schemas.Record]:
    """Real records of every type CCF writes to Kafka."""
    from ccf.backtest import CollectSink
    from ccf.capture.readers import read_records
    from ccf.entry import run_dataflow
    from ccf.news.parse import parse_feed
    from ccf.settings import Settings
    from ccf.sources import RecordSource
    from flows.features import build_flow

    market = [i[0] if type(i) is tuple else i for i in capture_items]
    market = [r for r in market if isinstance(r, typing.get_args(schemas.MarketRecord))]  # not a bad line's error
    klines = list(itertools.islice(read_records([data_file(KLINES)]), 50))
    news, status = parse_feed(data_file(RSS).read_bytes(), "https://www.coindesk.com/arc/outboundfeeds/rss/",
                              fetched_ns=1_678_702_500_000_000_000)
    assert status.ok and news
    sink = CollectSink()
    run_dataflow(build_flow(Settings(), source=RecordSource({"capture": lambda: iter(capture_items)}), sink=sink))
    outputs = [r for o in sink.outs for r in (*o.rows, *o.predictions, *o.scores)]
    return [*market, *klines, *news, *outputs]


@pytest.fixture(scope="module")
def health_entries(capture_items: list[Any]) -> list[dict[str, Any]]:
    """Health entries as the ingest code makes them: book sync over the capture, websocket events, lag, retries."""
    from ccf.ingest.book_sync import BookSync
    from ccf.ingest.health import LagMeter, health, ws_health
    from ccf.wsource_types import HealthEvent

    out: list[dict[str, Any]] = []
    sync = BookSync("binance", "binance-0", checkpoint_ns=1)
    sync.new_session(["ETH-USDT"], 1, out)
    for item in capture_items:
        record, extra = item if type(item) is tuple else (item, None)
        if isinstance(record, BookSnapshot):
            sync.on_snapshot(record, extra, out)
        elif isinstance(record, BookDelta):
            sync.on_delta(record, extra, out)
    out += [ws_health(HealthEvent("binance-0", 1, 5, kind, "why", 2), "binance") for kind in contract.WS_KINDS]
    meter = LagMeter("binance", "binance-0")
    meter.batch(3, 10, 20)
    out.append(meter.report(30, [r for r in capture_items[:50] if not isinstance(r, tuple)], 1, 1))
    out += [health("snapshot_failed", "binance", "binance-0", "ETH-USDT", detail="HTTP 503", retry_in_s=d)
            for d in (0.5, None)]
    out.append(_kafka_retry_entry())
    return out


class _Err:
    def fatal(self) -> bool:
        return False

    def __str__(self) -> str:
        return "Local: Message timed out"


class _FlakyProducer:
    """Fails every delivery of the first flush, then delivers: what a broker outage looks like to the producer."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.pending: list[tuple[FakeMessage, Any]] = []
        self.delivered: list[FakeMessage] = []
        self.flushes = 0

    def produce(self, topic: str, value: bytes | None, key: bytes | None, on_delivery: Any) -> None:
        self.pending.append((FakeMessage(topic, key, value), on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        pending, self.pending = self.pending, []
        for msg, report in pending:
            report(_Err() if self.flushes == 1 else None, msg)
            if self.flushes > 1:
                self.delivered.append(msg)
        return 0


def _kafka_retry_entry() -> dict[str, Any]:
    from ccf.ingest.producer import ReliableProducer

    producer = ReliableProducer({}, retry_backoff_s=0.0, health_topic="ccf.health", producer_factory=_FlakyProducer)
    producer.send([("ccf.trades", b"binance:ETH-USDT", b"{}")])
    fake = producer.producer
    assert isinstance(fake, _FlakyProducer)
    (entry,) = [json.loads(m.value() or b"") for m in fake.delivered if m.topic() == "ccf.health"]
    assert entry["kind"] == "kafka_retry"
    return typing.cast(dict[str, Any], entry)


def _dead_letter() -> dict[str, Any]:
    """The dead letter of a real capture frame cut in half, as the ingest source makes it."""
    from ccf.capture.registry import codec_for
    from ccf.errors import ParseError
    from ccf.ingest.health import dead_letter

    with gzip.open(data_file(CAPTURE), "rt") as f:
        ts, frame = next(f).split(" ", 1)
    codec = codec_for("binance")
    assert codec is not None
    with pytest.raises(ParseError) as caught:
        codec.parse_frame(frame[: len(frame) // 2], int(ts))
    return dead_letter(caught.value, "binance-0", int(ts))


# --- the published files --------------------------------------------------------------------------------------


def test_committed_schema_files_are_the_codes() -> None:
    assert contract.stale_files(TOPICS_DIR) == [], "regenerate them: ccf schema"
    assert sorted(p.name for p in TOPICS_DIR.glob("*.json")) == sorted(contract.schema_texts())


def test_every_topic_is_documented() -> None:
    doc = (ROOT / "docs" / "consumers.md").read_text()
    for topic in contract.TOPICS:
        assert f"## `ccf.{topic}`" in doc and f"schemas/{contract.schema_file(topic)}" in doc, topic


@pytest.mark.parametrize("topic", contract.TOPICS)
def test_every_schema_is_a_valid_draft_2020_12_schema(topic: str) -> None:
    jsonschema.Draft202012Validator.check_schema(contract.topic_schemas()[topic])


def test_the_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert contract.main(["--out", str(tmp_path), "--check"]) == 1
    assert contract.main(["--out", str(tmp_path)]) == 0
    assert contract.main(["--out", str(tmp_path), "--check"]) == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == contract.schema_texts()
    assert "stale:" in capsys.readouterr().out


# --- which record goes to which topic ---------------------------------------------------------------------------


def test_raw_topics_are_the_ingest_producers() -> None:
    from ccf.ingest.producer import RAW_TOPICS

    routed: dict[str, set[type]] = {}
    for cls, topic in RAW_TOPICS.items():
        routed.setdefault(topic, set()).add(cls)
    assert routed == {t: set(contract.RECORD_TOPICS[t]) for t in contract.RAW}


def test_output_topics_are_the_features_sinks() -> None:
    from ccf.store.high_water import GUARDED  # the tables the sink sends to Kafka (and reads back at start)

    assert set(contract.OUTPUTS) == set(GUARDED)
    assert {t: contract.RECORD_TOPICS[t] for t in contract.OUTPUTS} == {
        "features": (FeatureRow,), "predictions": (Prediction,), "scores": (Score,)}


def test_every_record_type_has_exactly_one_topic() -> None:
    placed = [cls for types in contract.RECORD_TOPICS.values() for cls in types]
    assert sorted(c.__name__ for c in placed) == sorted(c.__name__ for c in typing.get_args(schemas.Record))


# --- real records against the schemas ---------------------------------------------------------------------------


def test_real_records_of_every_type_validate_against_their_topic(records: list[schemas.Record]) -> None:
    assert {type(r) for r in records} == set(typing.get_args(schemas.Record)), "a record type is missing"
    assert any(r.quantiles for r in records if isinstance(r, Prediction)), "no prediction with quantile bands"
    validators = {t: _validator(t) for t in contract.RECORD_TOPICS}
    for record in records:
        value = encode(record)
        validators[_topic_of(record)].validate(json.loads(value))
        assert decode(value) == record or _has_nan(record)


def _has_nan(record: schemas.Record) -> bool:
    """A feature row with NaN features: ``null`` on the wire, ``None`` back (NaN != NaN)."""
    return isinstance(record, FeatureRow) and any(v != v for v in record.features.values() if v is not None)


def test_book_checkpoints_and_tft_style_predictions_validate(capture_items: list[Any]) -> None:
    """A checkpoint (a copy of a book in sync) and a prediction with quantile bands, as the TFT writes them."""
    from ccf.book import APPLIED
    from ccf.ingest.book_sync import BookSync

    sync, out, checkpoints = BookSync("binance", "binance-0", checkpoint_ns=1), [], []
    for item in capture_items:
        record, extra = item if type(item) is tuple else (item, None)
        if isinstance(record, BookSnapshot):
            sync.on_snapshot(record, extra, out)
        elif isinstance(record, BookDelta) and sync.on_delta(record, extra, out) is APPLIED \
                and (c := sync.checkpoint(record)):
            checkpoints.append(c)
    assert checkpoints and all(c.checkpoint for c in checkpoints)
    for c in checkpoints[:20]:
        _validator("book").validate(json.loads(encode(c)))
    bands = {"0.1": -3e-4, "0.5": -1e-4, "0.9": 2e-4}
    tft = Prediction("tft", "7", "binance", "ETH-USDT", 5, 5.0, 10, 15, -1e-4, bands)
    _validator("predictions").validate(json.loads(encode(tft)))


def test_readers_ignore_unknown_fields_and_refuse_unknown_versions(records: list[schemas.Record]) -> None:
    trade = next(json.loads(encode(r)) for r in records if _topic_of(r) == "trades")
    newer = {**trade, "maker_order_id": "x1"}  # a field a later v1 may add
    _validator("trades").validate(newer)
    assert encode(decode(json.dumps(newer))) == encode(decode(json.dumps(trade)))
    for bad in ({**trade, "type": "trade.v2"}, {k: v for k, v in trade.items() if k != "price"}):
        assert not _validator("trades").is_valid(bad)
        with pytest.raises(msgspec.ValidationError):
            decode(json.dumps(bad))


# --- health and dead letters ------------------------------------------------------------------------------------


def test_the_websocket_kinds_are_the_sources() -> None:
    from ccf.wsource_types import HealthKind

    assert typing.get_args(HealthKind) == contract.WS_KINDS


def test_health_entries_the_ingest_code_makes_validate(health_entries: list[dict[str, Any]]) -> None:
    kinds = {e["kind"] for e in health_entries}
    assert {*contract.WS_KINDS, "resync", "snapshot", "snapshot_failed", "lag", "kafka_retry"} <= kinds
    validator = _validator("health")
    for entry in health_entries:
        validator.validate(json.loads(json.dumps(entry)))


def test_the_health_schema_requires_the_common_fields_and_each_kinds_own(
    health_entries: list[dict[str, Any]],
) -> None:
    validator = _validator("health")
    lag = next(e for e in health_entries if e["kind"] == "lag")
    for field in ("ts", "kind", "venue", "symbol", "conn", "queue_ms"):
        assert not validator.is_valid({k: v for k, v in lag.items() if k != field}), field
    assert validator.is_valid({**lag, "kind": "a_kind_from_later", "extra": 1})


def test_dead_letters_validate() -> None:
    entry = _dead_letter()
    assert entry["venue"] == "binance" and entry["raw"] and entry["conn"] == "binance-0"
    validator = _validator("dlq")
    validator.validate(json.loads(json.dumps(entry)))
    assert not validator.is_valid({k: v for k, v in entry.items() if k != "raw"})


def test_the_documented_consumer_is_the_example_file() -> None:
    doc = (ROOT / "docs" / "consumers.md").read_text()
    listing = doc.split("```python\n", 1)[1].split("```\n", 1)[0]
    assert listing == (ROOT / "examples" / "consumer.py").read_text()


def test_ccf_schema_writes_every_topic_and_checks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ccf.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["schema", "--out", str(tmp_path), "--check"]).exit_code == 1
    written = runner.invoke(app, ["schema", "--out", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(contract.schema_texts())
    assert runner.invoke(app, ["schema", "--out", str(tmp_path), "--check"]).exit_code == 0
    assert runner.invoke(app, ["schema", "--check"]).exit_code == 0  # the committed docs/schemas, from the repo root

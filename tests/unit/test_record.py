"""``ccf record`` -> readers round trip: a real capture served by the local venue server (loopback), recorded as
rotating zstd/gzip JSONL, read back into the capture's own records; cut files, binary frames, the CLI."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from ccf.capture.readers import Format, RawFrame, detect_format, read_file, read_records
from ccf.capture.record import SUFFIX, Header, RecordConfig, RotatingWriter, frame_line, read_recording, record_venue
from ccf.capture.replay import BookReplayer, replay
from ccf.cli import app
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, BookTop, MarketRecord, Trade
from ccf.venue_server.runner import ServerThread
from ccf.wsource import Frame, HealthEvent, WsConfig
from tests.datafiles import data_file
from tests.venue_fixtures import venue_server, venue_server_factory  # noqa: F401

CAPTURE = "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz"
CHANNELS = ["depth", "trade", "book_ticker"]
FAST = WsConfig(backoff_initial_s=0.05, backoff_max_s=0.2, silence_timeout_s=5.0, max_tries=3, open_timeout_s=2,
                stop_on_end_of_data=True)


def content(record: MarketRecord) -> MarketRecord:
    """A record without our receipt time (spot bookTicker has no venue time either: its ts_event is ours)."""
    if isinstance(record, BookTop):
        return msgspec.structs.replace(record, ts_recv=0, ts_event=0)
    return msgspec.structs.replace(record, ts_recv=0)


def final_books(items: list[object]) -> dict[tuple[str, str], object]:
    replayer = BookReplayer()
    for _ in replay(items, replayer):  # type: ignore[arg-type]  # reader items
        pass
    assert set(replayer.counts) <= {"APPLIED", "BUFFERED", "STALE", "SNAPSHOT"}, replayer.counts
    assert all(sb.valid for sb in replayer.books.values())
    # the top 200 levels: a 1000-level REST snapshot of a deeper book leaves out levels the capture's book has
    return {k: (sb.book.top_bids(200), sb.book.top_asks(200)) for k, sb in replayer.books.items()}


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_recording_reads_back_into_the_captures_records(
    compression: str, venue_server_factory: Callable[..., ServerThread], tmp_path: Path  # noqa: F811
) -> None:
    capture = data_file(CAPTURE)
    server = venue_server_factory(mode="replay", files=(capture,))
    config = RecordConfig(tmp_path, "zstd" if compression == "zstd" else "gzip", max_bytes=4 * 2**20)
    summary = record_venue("binance", ["ETH-USDT"], config, channels=CHANNELS, ws_url=server.ws_url,
                           rest_url=server.base_url, ws_config=FAST, duration_s=50)
    expected = [r for r in read_file(capture) if not isinstance(r, BookSnapshot)]
    assert (summary.frames, summary.rest) == (len(expected), 1)
    assert len(summary.files) >= 3  # rotated by size
    assert sorted(tmp_path.iterdir()) == sorted(summary.files)  # no .part left behind
    assert all(f.name.endswith(SUFFIX[compression]) and detect_format(f) is Format.CCF_RECORDING
               for f in summary.files)
    items = list(read_records(summary.files))
    assert not [i for i in items if isinstance(i, ParseError | RawFrame)]
    records = [i for i in items if not isinstance(i, BookSnapshot)]
    assert [content(r) for r in records] == [content(r) for r in expected]  # type: ignore[arg-type]
    times = [r.ts_recv for r in items]  # type: ignore[union-attr]
    assert times == sorted(times)
    (snap,) = [i for i in items if isinstance(i, BookSnapshot)]
    assert (snap.venue, snap.symbol) == ("binance", "ETH-USDT") and len(snap.bids) > 500
    # the snapshot the recorder fetched bridges the recorded diffs: the book ends as the capture's own
    assert final_books(items) == final_books(list(read_file(capture)))


def test_age_rotation_binary_frames_events_and_a_cut_file(tmp_path: Path) -> None:
    header = Header(1, "binance", "c", "wss://stream.binance.com:9443/stream", 0, ["ETH-USDT"])
    trade = ('{"e":"trade","E":1,"s":"ETHUSDT","t":7,"p":"2500.01","q":"0.5","T":1723161254000,"m":true}')
    writer = RotatingWriter(RecordConfig(tmp_path, max_seconds=3600, flush_every_s=3600), header)
    writer.write(frame_line(HealthEvent("c", 1, 10, "connected")), 10)
    writer.write(frame_line(Frame("c", 1, 11, trade)), 11)
    writer.write(frame_line(Frame("c", 1, 12, trade.encode())), 12)  # a binary frame
    writer.flush()
    (part,) = tmp_path.glob("*.part")
    cut = tmp_path / "cut.ccf.jsonl.zst"
    shutil.copy(part, cut)  # what a crash leaves: everything up to the last flush
    writer.write(frame_line(Frame("c", 1, 13, "{not json")), 13)
    writer.config = RecordConfig(tmp_path, max_seconds=0.0)  # the next line goes to a new file: this one is old
    writer.write(frame_line(Frame("c", 2, 14, trade)), 14)
    writer.config = RecordConfig(tmp_path, max_seconds=3600)
    writer.write(frame_line(Frame("c", 2, 15, trade)), 15)
    writer.close()
    assert len(writer.files) == 2
    items = list(read_records(writer.files))
    trades = [i for i in items if isinstance(i, Trade)]
    assert [t.ts_recv for t in trades] == [11, 12, 14, 15]
    assert {(t.trade_id, t.price, t.side) for t in trades} == {("7", 2500.01, "sell")}
    (bad,) = [i for i in items if isinstance(i, ParseError)]
    assert bad.raw == "{not json" and f"{writer.files[0].name}:5:" in bad.reason  # header, event, 2 trades, this
    assert [type(i) for _, i in read_recording(cut)] == [Trade, Trade]  # the cut file reads up to its flush
    assert detect_format(cut) is Format.CCF_RECORDING
    truncated = tmp_path / "truncated.ccf.jsonl.gz"
    gz = RotatingWriter(RecordConfig(tmp_path / "gz", "gzip"), header)
    for t in range(100):
        gz.write(frame_line(Frame("c", 1, t, trade)), t)
    gz.close()
    truncated.write_bytes(gz.files[0].read_bytes()[:-12])  # cut inside the gzip trailer
    items = list(read_file(truncated))
    assert {type(i) for i in items[:-1]} == {Trade} and len(items) > 90 and isinstance(items[-1], ParseError)
    assert "file ends early" in items[-1].reason  # type: ignore[union-attr]


def test_frames_of_a_venue_without_a_codec_come_back_raw(tmp_path: Path) -> None:
    header = Header(1, "kucoin", "k", "wss://ws-api.kucoin.com/endpoint", 0)
    writer = RotatingWriter(RecordConfig(tmp_path, "gzip"), header)
    writer.write(frame_line(Frame("k", 1, 5, b"\x00\xffbinary")), 5)
    writer.write(frame_line(Frame("k", 1, 6, "{}", url="https://api.kucoin.com/x")), 6)
    writer.close()
    assert list(read_records(writer.files)) == [
        RawFrame("kucoin", 5, "\x00\ufffdbinary", f"{writer.files[0].name}:2"),
        RawFrame("kucoin", 6, "{}", f"{writer.files[0].name}:3", "https://api.kucoin.com/x"),
    ]
    assert base64.b64decode(msgspec.json.decode(frame_line(Frame("k", 1, 5, b"\x00"))).get("b")) == b"\x00"


def test_ccf_record_cli_against_the_synthetic_venue(venue_server: ServerThread, tmp_path: Path) -> None:  # noqa: F811
    result = CliRunner().invoke(app, [
        "record", "--venue", "synthetic", "--symbols", "BTC-USDT,ETH-USDT", "--channels", "depth,trade",
        "--ws-url", venue_server.ws_url, "--rest-url", venue_server.base_url, "--duration", "1.5",
        "--out", str(tmp_path / "rec"), "--compression", "gzip",
    ])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "rec").iterdir())
    assert len(files) == 1 and files[0].name.startswith("synthetic-") and files[0].suffix == ".gz"
    frames = int(result.stdout.split()[0])
    assert frames > 100 and result.stdout.strip().endswith(f"2 REST answers in 1 file(s) -> {tmp_path / 'rec'}")
    items = list(read_records(files))
    assert {type(i) for i in items} == {BookSnapshot, BookDelta, Trade}
    assert {(i.venue, i.symbol) for i in items} == {("synthetic", "BTC-USDT"), ("synthetic", "ETH-USDT")}
    assert len(final_books(items)) == 2

"""The capture registry's Coinbase, Kraken, OKX and Bybit v5 codecs on the real cryptofeed captures.

Every frame of each capture comes out of the readers as records (no raw frames, no parse errors) equal to what the
venue module's parser gives line by line; Bybit takes its category from the capture's first line; ``ccf
book-replay`` keeps every book valid through the whole capture.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccf.capture.readers import RawFrame, read_file, read_records
from ccf.capture.registry import VENUES, codec_for
from ccf.cli import app
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, MarketRecord
from ccf.venues import bybit, coinbase, kraken, okx
from tests.datafiles import data_file
from tests.unit.venue_captures import received

CF = "cryptofeed_sample_data/"
KRAKEN = [CF + f"KRAKEN.ws.{n}.0.gz" for n in (48, 49, 50)]
OKX_MAY = [CF + "OKX.ws.1.0.gz"]
OKX_FEB = [CF + "okx_2022-02/OKX.ws.1.0.gz"]
COINBASE = [CF + "COINBASE.ws.28.0.gz"]
BYBIT_V5 = [CF + "bybit_v5_2025/BYBIT.ws.1.0.gz", CF + "bybit_v5_2025/BYBIT.ws.2.0.gz"]
BYBIT_V2 = [CF + "BYBIT.ws.25.0.gz", CF + "BYBIT.ws.26.0.gz"]

Parser = Callable[[str, int], Sequence[MarketRecord]]


def _bybit_linear(raw: str, ts: int) -> list[MarketRecord]:
    return bybit.parse(raw, ts, category="linear")


# capture files, the venue parser that is the oracle for each file, and the record counts by type
CASES = {
    "kraken": (KRAKEN, [kraken.parse] * 3, {"BookSnapshot": 10, "BookDelta": 4269, "Trade": 10}),
    "okx-2022-05": (OKX_MAY, [okx.parse], {"Trade": 74, "BookSnapshot": 3, "BookDelta": 287}),
    "okx-2022-02": (OKX_FEB, [okx.parse], {"Trade": 19, "BookSnapshot": 20, "BookDelta": 3659}),
    "coinbase": (COINBASE, [coinbase.parse], {"BookSnapshot": 10, "Trade": 107, "BookDelta": 9719}),
    "bybit-v5": (BYBIT_V5, [_bybit_linear, bybit.parse], {"BookSnapshot": 337}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_frame_becomes_records_equal_to_the_venue_parser(name: str) -> None:
    files, parsers, counts = CASES[name]
    for relative, parse in zip(files, parsers, strict=True):
        got = list(read_file(data_file(relative)))
        assert not [i for i in got if isinstance(i, RawFrame | ParseError)]
        records = [i[0] if isinstance(i, tuple) else i for i in got]
        assert records == [r for ts, raw in received(relative) for r in parse(raw, ts)]
    merged = list(read_records([data_file(f) for f in files]))
    assert Counter(type(r).__name__ for r in merged) == counts
    times = [r.ts_recv for r in merged if not isinstance(r, ParseError | RawFrame)]
    assert times == sorted(times)


@pytest.mark.parametrize("files", [KRAKEN, OKX_MAY + OKX_FEB], ids=["kraken", "okx"])
def test_checksum_venues_hand_their_level_text_to_the_book_rule(files: list[str]) -> None:
    items = list(read_records([data_file(f) for f in files], with_extra=True))
    book = [i for i in items if isinstance(i, tuple)]
    assert book and all(isinstance(r, BookSnapshot | BookDelta) and x is not None for r, x in book)
    assert not [i for i in items if isinstance(i, BookSnapshot | BookDelta)]  # never without its text


def test_bybit_category_comes_from_the_connection_url() -> None:
    linear, spot = (list(read_file(data_file(f))) for f in BYBIT_V5)
    assert {r.symbol for r in linear if isinstance(r, BookSnapshot)} == {
        "AIOZ-USDT-PERP", "BAND-USDT-PERP", "RAD-USDT-PERP", "SNT-USDT-PERP"}
    assert {r.symbol for r in spot if isinstance(r, BookSnapshot)} == {
        "ARB-USDC", "CPOOL-USDT", "KCS-USDT", "MASA-USDT", "OP-USDC", "TUSD-USDT"}
    linear_codec = codec_for("bybit", "wss://stream.bybit.com/v5/public/linear")
    assert linear_codec is not None and linear_codec.to_symbol("BANDUSDT") == "BAND-USDT-PERP"
    assert codec_for("bybit") is VENUES["bybit"]
    assert codec_for("kraken", "wss://ws.kraken.com") is VENUES["kraken"]
    assert codec_for("kucoin", "wss://x") is None


def test_legacy_bybit_v2_frames_stay_raw() -> None:
    frames = list(read_records([data_file(f) for f in BYBIT_V2]))
    assert len(frames) == 4440
    assert all(isinstance(f, RawFrame) and f.venue == "bybit" for f in frames)


@pytest.mark.parametrize(
    ("name", "files", "rows", "epochs"),
    [("kraken", KRAKEN, 4279, {0}), ("okx-2022-05", OKX_MAY, 290, {0}), ("okx-2022-02", OKX_FEB, 3679, {0, 1}),
     ("coinbase", COINBASE, 9729, {0}), ("bybit-v5", BYBIT_V5, 337, None)],
)
def test_book_replay_cli_keeps_every_book_valid(name: str, files: list[str], rows: int, epochs: set[int] | None,
                                                tmp_path: Path) -> None:
    out = tmp_path / f"{name}.csv"
    result = CliRunner().invoke(app, ["book-replay", *[str(data_file(f)) for f in files], "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{rows} book updates -> {out}"
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == rows
    assert Counter(r["event"] for r in table).keys() <= {"APPLIED", "SNAPSHOT"}
    assert all(r["book_valid"] == "True" for r in table)
    assert all(float(r["best_bid"]) < float(r["best_ask"]) for r in table if r["best_bid"] and r["best_ask"]
               and r["best_bid"] != "nan" and r["best_ask"] != "nan")
    if epochs is not None:  # OKX Feb: every instrument was subscribed twice, so its second snapshot is epoch 1
        assert {int(r["epoch"]) for r in table} == epochs

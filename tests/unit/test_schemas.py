from __future__ import annotations

import math
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccf import schemas
from ccf.schemas import (
    BookDelta,
    BookSnapshot,
    BookTop,
    FeatureRow,
    Kline,
    NewsItem,
    Prediction,
    Score,
    Trade,
    decode,
    encode,
    format_decimal,
)

ints = st.integers(min_value=0, max_value=2**62)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
prices = st.floats(min_value=1e-8, max_value=1e7, allow_nan=False)
text = st.text(max_size=20)
levels = st.lists(st.tuples(prices, st.floats(min_value=0, max_value=1e6)), max_size=5).map(tuple)
common = {"venue": text, "symbol": text, "ts_event": ints, "ts_recv": ints}

RECORDS = st.one_of(
    st.builds(BookSnapshot, bids=levels, asks=levels, last_update_id=ints, epoch=ints, **common),
    st.builds(BookDelta, bids=levels, asks=levels, first_update_id=ints, last_update_id=ints,
              prev_update_id=st.none() | ints, checksum=st.none() | st.integers(-(2**31), 2**32), **common),
    st.builds(BookTop, bid_price=prices, bid_size=finite, ask_price=prices, ask_size=finite, update_id=ints, **common),
    st.builds(Trade, price=prices, size=finite, side=st.sampled_from(["buy", "sell"]), trade_id=text, **common),
    st.builds(Kline, interval_s=st.integers(1, 86400), open=finite, high=finite, low=finite, close=finite,
              volume=finite, trades=ints, closed=st.booleans(), **common),
    st.builds(NewsItem, id=text, feed=text, title=text, link=text, published=st.none() | ints, fetched=ints),
    st.builds(FeatureRow, venue=text, symbol=text, window_start=ints, window_end=ints, feature_set=text,
              book_valid=st.booleans(), epoch=ints, features=st.dictionaries(text, finite, max_size=5)),
    st.builds(Prediction, model=text, model_version=text, venue=text, symbol=text, horizon_steps=st.integers(1, 100),
              horizon_s=finite, issued_at=ints, target_time=ints, value=finite,
              quantiles=st.dictionaries(text, finite, max_size=3)),
    st.builds(Score, model=text, horizon_steps=st.integers(1, 100), venue=text, symbol=text, window_end=ints,
              n=ints, mae=finite, rmse=finite, hit_rate=st.none() | finite, pinball=st.none() | finite,
              coverage=st.none() | finite, skill=st.none() | finite),
)


@given(RECORDS)
def test_encode_decode_round_trip(record: schemas.Record) -> None:
    assert decode(encode(record)) == record


def test_records_are_frozen() -> None:
    t = Trade(venue="v", symbol="A-B", ts_event=1, ts_recv=2, price=1.0, size=1.0, side="buy", trade_id="1")
    with pytest.raises(AttributeError):
        t.price = 2.0  # type: ignore[misc]


def test_decoding_refuses_unknown_version_and_bad_fields() -> None:
    good = encode(Trade(venue="v", symbol="A-B", ts_event=1, ts_recv=2, price=1.0, size=1.0, side="buy", trade_id="1"))
    with pytest.raises(msgspec.ValidationError):
        decode(good.replace(b"trade.v1", b"trade.v99"))
    with pytest.raises(msgspec.ValidationError):
        decode(good.replace(b'"buy"', b'"long"'))


@given(st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("9999999"), places=8, allow_nan=False))
def test_venue_decimals_are_exact_as_float(d: Decimal) -> None:
    """Up to 15 significant digits survive float and come back as the same decimal text."""
    venue_text = format(d, "f")  # e.g. '2500.01000000', as Binance sends it
    as_float = float(venue_text)
    assert Decimal(format_decimal(as_float)) == d
    assert math.isclose(as_float, float(d), rel_tol=0, abs_tol=0)


def test_format_decimal_never_uses_exponent() -> None:
    assert format_decimal(1e-7) == "0.0000001"
    assert format_decimal(1.5e16) == "15000000000000000"
    assert format_decimal(-0.00001) == "-0.00001"

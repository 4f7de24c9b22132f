"""The one exception tree of CCF.

::

    CCFError
    ├── ConfigError            bad or missing settings (names the CCF_ variable)
    ├── ServiceError           a local service (Kafka, QuestDB, MLflow) could not be obtained, started or reached
    ├── DataError              input that cannot be used; carries venue, symbol, raw payload and reason
    │   ├── ParseError         a message or file line that does not parse
    │   └── BookError          an order book that cannot be trusted
    │       ├── SequenceGapError   a missing or out-of-order update id
    │       ├── ChecksumError      a venue checksum that does not match our book
    │       └── CrossedBookError   best bid >= best ask after an update
    ├── ConnectionFailedError  a venue connection that failed N times in a row
    │   └── WorkerDiedError    its worker thread died N times in a row (the last exception is the cause)
    ├── RetrainFailedError     the periodic retrain (``ccf train --every``) that failed N times in a row
    └── SinkError              a store or broker write that failed after its retries

Raise with the identifiers in the message and ``from exc``. Bad *data* becomes an item on an error stream
(see :class:`DataError.to_dict`); our own programming errors are never caught into these.
"""

from __future__ import annotations


class CCFError(Exception):
    """Base of every error CCF raises on purpose."""


class ConfigError(CCFError):
    """Settings that cannot be used."""


class DataFileError(CCFError, ValueError):
    """A data file (a capture, klines) that cannot be read at all: missing, empty, not a format CCF reads."""


class ServiceError(CCFError):
    """A local service could not be obtained, started or reached."""


class DataError(CCFError):
    """Input that cannot be used. Routed to the dead-letter stream, never silently dropped."""

    def __init__(self, reason: str, *, venue: str = "", symbol: str = "", raw: bytes | str | None = None) -> None:
        super().__init__(f"{venue}:{symbol}: {reason}" if venue or symbol else reason)
        self.reason = reason
        self.venue = venue
        self.symbol = symbol
        self.raw = raw

    def to_dict(self) -> dict[str, str]:
        raw = self.raw.decode("utf-8", "replace") if isinstance(self.raw, bytes) else (self.raw or "")
        return {
            "error": type(self).__name__,
            "venue": self.venue,
            "symbol": self.symbol,
            "reason": self.reason,
            "raw": raw,
        }


class ParseError(DataError):
    """A message or line that does not parse."""


class BookError(DataError):
    """An order book that cannot be trusted until it is resynced."""


class SequenceGapError(BookError):
    """A missing or out-of-order update id."""


class ChecksumError(BookError):
    """A venue checksum that does not match our book."""


class CrossedBookError(BookError):
    """Best bid at or above best ask."""


class ConnectionFailedError(CCFError):
    """A venue connection that failed too many times in a row."""


class RetrainFailedError(CCFError):
    """The periodic retrain failed too many times in a row."""


class WorkerDiedError(ConnectionFailedError):
    """A connection whose worker thread died too many times in a row; ``__cause__`` is the last exception."""


class SinkError(CCFError):
    """A write that failed after its retries."""

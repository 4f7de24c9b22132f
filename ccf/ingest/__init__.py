"""Live ingestion: venue websockets -> parsed, book-checked records -> Kafka raw topics (``flows/ingest.py``).

- :mod:`ccf.ingest.links`: which venues can be connected to and how (connections, snapshot URLs, codec).
- :mod:`ccf.ingest.book_sync`: one connection's books, and which symbols need a snapshot now.
- :mod:`ccf.ingest.fetcher`: REST snapshots fetched in background threads (``next_batch`` never waits for one).
- :mod:`ccf.ingest.source`: the Bytewax source: one partition per connection, one :class:`IngestBatch` per batch.
- :mod:`ccf.ingest.health`: health and dead-letter entries (JSON objects), the lag meter.
- :mod:`ccf.ingest.producer`: topics, encoding, and the idempotent Kafka sink that retries failed deliveries.
"""

from __future__ import annotations

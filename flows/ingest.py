"""The ingest job: ``python -m bytewax.run flows.ingest``.

Venue websockets (``CCF_VENUES__SOURCE``: a Binance market, or ``synthetic`` served by ``ccf venue-server``) for
``CCF_VENUES__SYMBOLS`` -> parsed records, every book kept in sync (a REST snapshot after each gap, checksum
failure, crossed book or new session, published where it was applied) -> Kafka ``ccf.book`` / ``ccf.trades`` /
``ccf.klines``, news (``CCF_NEWS__ENABLED``) -> ``ccf.news``; what cannot be parsed -> ``ccf.dlq``; reconnects,
resyncs and lag -> ``ccf.health``. Keys are ``venue:SYMBOL``; the producer is idempotent with ``acks=all`` and a
batch is written before Bytewax commits its epoch (:mod:`ccf.ingest.producer`). See :mod:`ccf.ingest.source` for
the source side.

Items flow in batches: one item per websocket batch (and one per news item), encoded to a list of Kafka messages.
``CCF_STOP_AFTER`` ends the run cleanly after that many seconds of the feed. The module builds, it does not run:
``flow`` is made on first access from the environment; tests call :func:`build_flow` with their own pieces
(``ws_url`` / ``rest_url`` point it at the local venue server).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from ccf.errors import ConfigError
from ccf.ingest.producer import KafkaMessage, Topics, batch_messages, news_messages
from ccf.settings import Settings
from ccf.wsource import WsConfig

logger = logging.getLogger(__name__)


def build_flow(
    settings: Settings | None = None,
    source: Source[Any] | None = None,
    sink: Sink[list[KafkaMessage]] | None = None,
    *,
    ws_url: str | None = None,
    rest_url: str | None = None,
    channels: Sequence[str] | None = None,
    news_source: Source[Any] | None = None,
    ws_config: WsConfig | None = None,
) -> Dataflow:
    """The ingest dataflow. ``source`` yields :class:`~ccf.ingest.source.IngestBatch` es (default: the venue of
    ``settings`` at ``ws_url``/``rest_url``, else ``CCF_VENUES__WS_URL`` / ``CCF_VENUES__REST_URL``, else the
    venue's public URLs; ``channels`` else ``CCF_VENUES__CHANNELS`` else the venue's default); ``sink`` takes lists
    of ``(topic, key, value)`` (default: Kafka)."""
    if settings is None:
        from ccf.settings import load_settings

        settings = load_settings()
    topics = Topics(settings.kafka.topic_prefix)
    flow = Dataflow("ccf_ingest")
    if source is None:
        source = make_source(settings, ws_url=ws_url, rest_url=rest_url, channels=channels, ws_config=ws_config)
    batches = op.input("venues", flow, source)
    messages = op.map("encode", batches, partial(batch_messages, topics=topics))
    if news_source is None and settings.news.enabled:
        from ccf.news.source import NewsSource

        news_source = NewsSource.from_settings(settings.news, stop_after_s=settings.stop_after)
    if news_source is not None:
        news = op.map("encode_news", op.input("news", flow, news_source), partial(news_messages, topics=topics))
        messages = op.merge("all_messages", messages, news)
    op.output("kafka", messages, sink if sink is not None else make_sink(settings))
    return flow


def make_source(
    settings: Settings,
    *,
    ws_url: str | None = None,
    rest_url: str | None = None,
    channels: Sequence[str] | None = None,
    ws_config: WsConfig | None = None,
) -> Source[Any]:
    """The websocket source of ``settings.venues`` (see :func:`build_flow` for the URLs)."""
    from ccf.ingest.links import make_link
    from ccf.ingest.source import IngestConfig, IngestSource
    from ccf.wsource import fetch_rest_sync

    v = settings.venues
    ws_url = ws_url or getattr(v, "ws_url", None) or None  # VenueSettings fields, where the settings have them
    rest_url = rest_url or getattr(v, "rest_url", None) or None
    channels = channels or getattr(v, "channels", None) or None
    link = make_link(v.source, v.symbols, channels, ws_url=ws_url, rest_url=rest_url)
    ws = ws_config or WsConfig.from_settings(v, stop_on_end_of_data=True)
    fetch = partial(fetch_rest_sync, tries=ws.rest_tries, timeout_s=ws.rest_timeout_s,
                    backoff_initial_s=ws.backoff_initial_s, backoff_max_s=min(ws.backoff_max_s, 5.0))
    config = IngestConfig(ws=ws, fetch=fetch, stop_after_s=settings.stop_after,
                          resync_backoff_max_s=min(v.backoff_max_s, 5.0), checkpoint_s=v.checkpoint_s)
    logger.info("ingest: %s %s over %d connection(s)", link.venue, ", ".join(link.symbols), len(link.connections))
    return IngestSource(link, config)


def make_sink(settings: Settings) -> Sink[list[KafkaMessage]]:
    if not settings.kafka.enabled:
        raise ConfigError("flows.ingest writes Kafka: set CCF_KAFKA__BOOTSTRAP_SERVERS")
    from ccf.ingest.producer import KafkaSink

    return KafkaSink(settings)


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run flows.ingest` looks up `flow`: build it then, from the environment, never on import.
    if name == "flow":
        from ccf.entry import from_environment

        return from_environment(build_flow, secrets=("kafka",))  # ingest writes Kafka only
    raise AttributeError(name)

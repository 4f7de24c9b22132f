"""Health probes of the stack's roles (``ccf stack probe ROLE``, compose's healthchecks too) and consumer lag.

Each probe reads the role's own settings (its ``CCF_*`` environment), so the same command works in a container and
natively. A probe returns ``(healthy, one line)``.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from ccf.settings import Settings

logger = logging.getLogger(__name__)

TIMEOUT_S = 4.0


def probe_venue(settings: Settings) -> tuple[bool, str]:
    """The local venue server answers its REST ping."""
    base = settings.venues.rest_url.rstrip("/")
    if not base:
        return False, "CCF_VENUES__REST_URL is not set"
    try:
        resp = httpx.get(f"{base}/api/v3/ping", timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return False, f"venue server at {base}: {exc}"
    return resp.status_code == 200, f"venue server at {base}: HTTP {resp.status_code}"


def questdb_count(settings: Settings, table: str) -> int | None:
    """Rows of ``<prefix><table>`` in QuestDB (None when it cannot be read: no table yet, no server)."""
    url = settings.questdb.http_url.rstrip("/")
    name = settings.questdb.table_prefix + table
    try:
        body: dict[str, Any] = httpx.get(f"{url}/exec", params={"query": f"SELECT count() FROM '{name}'"},
                                         timeout=TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError) as exc:
        logger.debug("count of %s: %s", name, exc)
        return None
    if "dataset" not in body:
        return None
    return int(body["dataset"][0][0])


def probe_features(settings: Settings) -> tuple[bool, str]:
    """The features job has written rows to QuestDB and its consumer group has committed offsets."""
    if not settings.questdb.enabled:
        return False, "CCF_QUESTDB__HTTP_URL is not set"
    rows = questdb_count(settings, "features")
    if not rows:
        return False, f"no rows in {settings.questdb.table_prefix}features yet"
    lag = consumer_lag(settings)
    if lag is None:
        return False, f"{rows} feature rows; group {settings.kafka.group_id} has committed no offsets"
    return True, f"{rows} feature rows; consumer lag {lag}"


def probe_app(settings: Settings) -> tuple[bool, str]:
    """The Panel app answers (any status but a server error: with basic auth, / redirects to the login page)."""
    host = "127.0.0.1" if settings.app.host in ("0.0.0.0", "") else settings.app.host
    try:
        resp = httpx.get(f"http://{host}:{settings.app.port}/", timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return False, f"app on {host}:{settings.app.port}: {exc}"
    return resp.status_code < 500, f"app on {host}:{settings.app.port}: HTTP {resp.status_code}"


PROBES = {"venue": probe_venue, "features": probe_features, "app": probe_app}


def consumer_lag(settings: Settings, group: str | None = None, timeout_s: float = TIMEOUT_S) -> int | None:
    """Messages the consumer ``group`` (default: the features job's) has not committed yet, over the partitions of
    the ``<prefix>*`` topics it has committed on; None when Kafka is not set, not reachable, or the group has
    committed nothing.

    A transactional topic (``ccf.predictions``, written in Kafka transactions) ends with a commit marker that no
    consumer reads, so a group that has read everything still shows up to one message of lag per such partition.
    Read with a plain consumer of the group (``committed`` without joining it), as the features job reads its own.
    """
    if not settings.kafka.enabled:
        return None
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    group = group or settings.kafka.group_id
    prefix = settings.kafka.topic_prefix
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        topics = consumer.list_topics(timeout=timeout_s).topics
        tps = [TopicPartition(name, p) for name, meta in topics.items() if name.startswith(prefix)
               for p in meta.partitions]
        committed = [tp for tp in consumer.committed(tps, timeout=timeout_s) if tp.offset >= 0] if tps else []
        if not committed:
            return None
        total = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            total += max(0, high - tp.offset)
    except KafkaException as exc:
        logger.debug("consumer lag of %s: %s", group, exc)
        return None
    finally:
        consumer.close()
    return total

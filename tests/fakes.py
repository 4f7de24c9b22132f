"""Stand-ins for confluent_kafka objects in tests that exercise our delivery logic without a broker round trip."""

from __future__ import annotations


class FakeMessage:
    """What a delivery callback receives: topic, key and value."""

    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._t, self._k, self._v = topic, key, value

    def topic(self) -> str:
        return self._t

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

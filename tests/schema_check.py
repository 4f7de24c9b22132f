"""Messages read back from real Kafka, validated against the published schema of their topic (docs/schemas/)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable

import jsonschema

from ccf import contract


@functools.cache
def _validator(topic: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(contract.topic_schemas()[topic])


def validate_values(topic: str, values: Iterable[bytes]) -> int:
    """Validate every message value of ``topic`` (its name without the prefix); returns how many were checked."""
    n = 0
    for value in values:
        errors = sorted(_validator(topic).iter_errors(json.loads(value)), key=str)
        assert not errors, f"{topic}: {errors[0].message} in {value[:300]!r}"
        n += 1
    return n

"""The fault suite as tests: each scenario must end with QuestDB holding the backtest's rows (none missing, none
twice, none different outside the windows an ingest outage touched, and those saying ``book_valid = false``), the
same rows as the features flow run in process over the same topics, every flow caught up after each fault, and
(where nothing upstream was lost) contiguous trade ids on Kafka.

A normal run collects :func:`test_short_features_sigkill` only (about a minute and a half); ``CCF_FAULTS_FULL=1``
(``make faults``) collects every scenario and records the figures in ``benchmarks/results/faults.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.datafiles import data_file
from tests.faults.harness import CAPTURES, Stack
from tests.faults.results import record
from tests.faults.scenarios import SCENARIOS, Context, failures, features_sigkill

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.e2e]


def _report(figures: dict[str, Any]) -> str:
    keep = ("scenario", "failures", "faults", "rows_compared", "missing", "duplicated", "differing",
            "differing_book_invalid", "recovery", "unexpected_exits", "outages")
    return json.dumps({k: figures.get(k) for k in keep}, indent=1, default=str)[:6000]


@pytest.mark.timeout(300)
def test_short_features_sigkill(services: Any, tmp_path: Path) -> None:
    """The short form: the first capture file (5¾ min) at 10×, ``flows.features`` SIGKILLed at 3 random points."""
    env = {k: v for k, v in services.env.items() if k.startswith(("CCF_KAFKA__", "CCF_QUESTDB__"))}
    ctx = Context(Stack(env), tmp_path, (data_file(CAPTURES[0]),), speed=10.0)
    figures = features_sigkill(ctx, kills=3, name="short_b_features_sigkill")
    assert figures["faults_injected"] == 3, _report(figures)
    assert failures(figures) == [], _report(figures)


@pytest.mark.faults_full
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str, own_stack: Stack, tmp_path: Path) -> None:
    ctx = Context(own_stack, tmp_path, tuple(data_file(c) for c in CAPTURES), speed=10.0)
    figures = SCENARIOS[name](ctx)
    record(figures)
    assert figures["faults_injected"] >= (0 if name in ("a", "h") else 1), _report(figures)
    assert failures(figures) == [], _report(figures)

"""Fault-suite fixtures: Kafka and QuestDB the suite may stop (its own run dir), and which scenarios run.

The normal run (``make test``) collects one short scenario, on the session's services; ``CCF_FAULTS_FULL=1``
(``make faults``) collects every scenario instead, on services of its own (``CCF_FAULTS_RUN_DIR``, else a temporary
run dir), and records their figures in ``benchmarks/results/faults.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Stack

FULL = os.environ.get("CCF_FAULTS_FULL", "") == "1"
RUN_DIR = os.environ.get("CCF_FAULTS_RUN_DIR", "")  # read at import: the root conftest clears CCF_* per test


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite (tests/faults): the processes users run, under faults")
    config.addinivalue_line("markers", "faults_full: a scenario of the full fault suite (CCF_FAULTS_FULL=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the short form in a normal run and the full suite with ``CCF_FAULTS_FULL=1`` (deselected, not skipped)."""
    here = Path(__file__).parent
    keep, drop = [], []
    for item in items:
        if here not in Path(str(item.path)).parents:
            keep.append(item)
            continue
        full = item.get_closest_marker("faults_full") is not None
        (keep if full == FULL else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Kafka and QuestDB that only this suite uses, so that scenarios may stop and start them."""
    from ccf.services.manager import ServiceManager

    run_dir = Path(RUN_DIR) if RUN_DIR else tmp_path_factory.mktemp("fault-services")
    already = {v.name for v in ServiceManager(run_dir).inspect(["kafka", "questdb"]) if v.answering}
    stack = Stack.up(run_dir)
    try:
        yield stack
    finally:
        if not already:
            stack.down()

"""SIGINT/SIGTERM end sources at their next batch (ccf.stopping), and a paced source sees it within half a second."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from ccf import stopping
from ccf.sources import RecordSource


@pytest.fixture(autouse=True)
def _fresh_flag() -> Iterator[None]:
    stopping.reset()
    yield
    stopping.uninstall()
    stopping.reset()


def _records(n: int, step_ns: int = 10_000_000) -> Iterator[SimpleNamespace]:
    for i in range(n):
        yield SimpleNamespace(venue="v", symbol="A", ts_event=1_000_000_000 + i * step_ns)


def test_a_requested_stop_ends_a_partition_at_its_next_batch() -> None:
    part = RecordSource({"p": lambda: _records(10_000)}, batch_size=100).build_part("s", "p", None)
    assert sum(len(c[1]) for c in part.next_batch()) == 100
    stopping.request("test")
    with pytest.raises(StopIteration):
        part.next_batch()
    assert part.snapshot() == 100  # resumes after what was emitted


def test_a_paced_partition_sleeps_at_most_half_a_second_and_keeps_what_is_not_due() -> None:
    # one record a minute: in real time the second is due in 60 s, but the partition asks to be woken sooner
    part = RecordSource({"p": lambda: _records(3, step_ns=60_000_000_000)}, pace=1.0).build_part("s", "p", None)
    assert sum(len(c[1]) for c in part.next_batch()) == 1
    awake = part.next_awake()
    assert awake is not None and (awake - datetime.now(UTC)).total_seconds() <= 0.5
    assert part.next_batch() == [] and part.snapshot() == 1  # the pending record is not emitted, not counted


def test_the_signal_handler_only_sets_the_flag() -> None:
    assert stopping.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stopping.requested() and stopping.reason() == "SIGTERM"
    with pytest.raises(StopIteration):
        stopping.check("test partition")

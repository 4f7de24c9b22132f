"""``ccf train --every``: failures in a row end it, each run writes the status file, ``ccf trainer-health`` reads it.

The retrain itself is a stand-in passed to :func:`models.retrain.run_every` (training is tested elsewhere); the status
file, the health rows (in a real embedded store) and the health command (a real ``ccf`` subprocess) are not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ccf.errors import RetrainFailedError
from ccf.settings import Settings
from ccf.store.duckdb_store import DuckDBStore
from ccf.store.sinks import all_tables
from models.cli import trainer_health
from models.retrain import read_status, run_every
from models.train import TrainConfig

CCF = Path(sys.executable).parent / "ccf"
HOUR = timedelta(hours=1)
T0 = datetime(2025, 11, 8, 13, 20, tzinfo=UTC)


class Stop(Exception):
    """Raised by the stand-in sleep to end the loop after a number of runs."""


class Clock:
    """A clock that only sleep (and a retrain taking time) moves; ``sleep`` stops the loop after ``runs`` sleeps."""

    def __init__(self, runs: int | None = None) -> None:
        self.now = T0
        self.slept: list[float] = []
        self.runs = runs

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.runs is not None and len(self.slept) >= self.runs:
            raise Stop
        self.now += timedelta(seconds=seconds)


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(run_dir=tmp_path, **kw)  # conftest: no CCF_* variable is set


def _scripted(outcomes: list[bool], clock: Clock, seen: list[dict[str, Any] | None],
              path: Path) -> Callable[[datetime, datetime], str]:
    """A retrain that succeeds or fails as ``outcomes`` say, takes a minute, and records the status it found."""
    it: Iterator[bool] = iter(outcomes)

    def retrain(start: datetime, end: datetime) -> str:
        seen.append(read_status(path))
        clock.now += timedelta(minutes=1)
        if next(it):
            return "version 1, promoted"
        raise RuntimeError(f"no feature rows in\n{start:%H:%M}..{end:%H:%M}")

    return retrain


def _health_rows(settings: Settings) -> list[tuple[Any, ...]]:
    store = DuckDBStore(settings.store.path, all_tables(settings))
    try:
        return store.query('SELECT venue, kind, value, detail, seq FROM "health" ORDER BY seq')
    finally:
        store.close()


def test_failures_in_a_row_end_the_loop_with_a_named_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    clock = Clock()
    seen: list[dict[str, Any] | None] = []
    retrain = _scripted([False] * 5, clock, seen, settings.trainer_status_path)
    with pytest.raises(RetrainFailedError, match=r"retrains failed in a row: 3 \(CCF_TRAINER__MAX_FAILURES=3\)") as info:
        run_every(settings, TrainConfig(), HOUR, timedelta(days=7), None, retrain=retrain, sleep=clock.sleep,
                  clock=clock)
    assert len(seen) == 3  # the default max_failures
    assert isinstance(info.value.__cause__, RuntimeError)
    # one line naming the last window and its error (the error's own line break folded)
    assert str(info.value).endswith("the last on 2025-11-01T15:00:00+00:00..2025-11-08T15:00:00+00:00: "
                                    "RuntimeError: no feature rows in 15:00..15:00")
    # it waited for the next multiple of the hour between runs: 13:21 -> 14:00, 14:01 -> 15:00
    assert clock.slept == [39 * 60.0, 59 * 60.0]
    status = read_status(settings.trainer_status_path)
    assert status is not None
    assert status["ok"] is False and status["consecutive_failures"] == 3 and status["max_failures"] == 3
    assert status["last_error"].startswith("RuntimeError: no feature rows in ") and "\n" not in status["last_error"]
    assert status["last_run"] == datetime(2025, 11, 8, 15, 1, tzinfo=UTC).isoformat()
    assert status["next_due"] == datetime(2025, 11, 8, 16, 0, tzinfo=UTC).isoformat()
    assert status["every_s"] == 3600.0
    # each failure is also a row of the health table
    rows = _health_rows(settings)
    assert [(v, k, val, seq) for v, k, val, _, seq in rows] == [("trainer", "retrain_failed", 1.0, n) for n in (1, 2, 3)]
    assert rows[2][3].startswith("3 in a row (max 3): RuntimeError: no feature rows in")


def test_a_success_resets_the_count(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    clock = Clock()
    seen: list[dict[str, Any] | None] = []
    outcomes = [False, False, True, False, False, True, False, False, False, True]
    retrain = _scripted(outcomes, clock, seen, settings.trainer_status_path)
    with pytest.raises(RetrainFailedError):
        run_every(settings, TrainConfig(), HOUR, timedelta(days=7), None, retrain=retrain, sleep=clock.sleep,
                  clock=clock)
    assert len(seen) == 9  # two failures, a success, two, a success, then three in a row
    counts = [s["consecutive_failures"] for s in seen if s is not None]
    assert counts == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    oks = [s["ok"] for s in seen if s is not None]
    assert oks == [None, False, False, True, False, False, True, False, False]
    assert seen[3] is not None and seen[3]["last_error"].startswith("RuntimeError")  # kept after the success


def test_the_count_carries_over_a_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = settings.trainer_status_path
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"consecutive_failures": 2, "ok": False, "last_error": "RuntimeError: before"}))
    clock = Clock()
    seen: list[dict[str, Any] | None] = []
    with pytest.raises(RetrainFailedError, match="retrains failed in a row: 3 "):
        run_every(settings, TrainConfig(), HOUR, timedelta(days=7), None,
                  retrain=_scripted([False], clock, seen, path), sleep=clock.sleep, clock=clock)
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0]["consecutive_failures"] == 2 and seen[0]["started"] == T0.isoformat()


def test_the_status_file_is_replaced_whole(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    clock = Clock(runs=2)
    seen: list[dict[str, Any] | None] = []
    with pytest.raises(Stop):
        run_every(settings, TrainConfig(), HOUR, timedelta(days=7), None,
                  retrain=_scripted([True, False], clock, seen, settings.trainer_status_path), sleep=clock.sleep,
                  clock=clock)
    assert sorted(p.name for p in settings.status_dir.iterdir()) == ["trainer.json"]  # no temporary file left
    status = read_status(settings.trainer_status_path)
    assert status is not None
    assert status["ok"] is False and status["consecutive_failures"] == 1
    assert status["window"] == [datetime(2025, 11, 1, 14, tzinfo=UTC).isoformat(),
                                datetime(2025, 11, 8, 14, tzinfo=UTC).isoformat()]


def test_a_store_that_cannot_be_written_does_not_hide_the_training_error(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    # QuestDB configured at a port where nothing listens: the health row cannot be written, the loop goes on
    settings = _settings(tmp_path, questdb={"http_url": "http://127.0.0.1:9"})
    clock = Clock()
    seen: list[dict[str, Any] | None] = []
    with pytest.raises(RetrainFailedError, match="RuntimeError: no feature rows") as info:
        run_every(settings, TrainConfig(), HOUR, timedelta(days=7), None,
                  retrain=_scripted([False] * 3, clock, seen, settings.trainer_status_path), sleep=clock.sleep,
                  clock=clock)
    assert isinstance(info.value.__cause__, RuntimeError) and len(seen) == 3
    warned = [r.getMessage() for r in caplog.records if "could not write the failed retrain" in r.getMessage()]
    assert len(warned) == 3 and "CCF_QUESTDB__HTTP_URL" in warned[0], warned


# -- the health verdict and the `ccf trainer-health` command --------------------------------------------------------
def _status(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"started": T0.isoformat(), "last_run": None, "ok": None, "consecutive_failures": 0,
                            "max_failures": 3, "last_error": "", "next_due": T0.isoformat(), "every_s": 3600.0}
    return {**base, **kw}


@pytest.mark.parametrize(
    ("status", "after", "healthy", "says"),
    [
        (None, timedelta(0), False, "no trainer status"),
        (_status(), timedelta(minutes=30), True, "no retrain ended yet"),
        (_status(), timedelta(hours=2, minutes=11), False, "since the trainer started"),
        (_status(last_run=T0.isoformat(), ok=True), timedelta(hours=2, minutes=9), True, "last retrain ok"),
        (_status(last_run=T0.isoformat(), ok=True), timedelta(hours=2, minutes=11), False, "last retrain ended"),
        (_status(last_run=T0.isoformat(), ok=False, consecutive_failures=2), timedelta(minutes=1), True, "2 failed"),
        (_status(last_run=T0.isoformat(), ok=False, consecutive_failures=3, last_error="RuntimeError: x"),
         timedelta(minutes=1), False, "3 failed retrains in a row (max 3), last: RuntimeError: x"),
        ({"started": "yesterday"}, timedelta(0), False, "unreadable"),
    ],
)
def test_health_verdict(status: dict[str, Any] | None, after: timedelta, healthy: bool, says: str) -> None:
    ok, line = trainer_health(status, T0 + after, 3, timedelta(minutes=10))
    assert ok is healthy and says in line, line


def _ccf_health(run_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    return subprocess.run([str(CCF), "trainer-health", *args], env={**clean, "CCF_RUN_DIR": str(run_dir), **env},
                          capture_output=True, text=True, timeout=60)


def _write(settings: Settings, status: dict[str, Any]) -> None:
    settings.trainer_status_path.parent.mkdir(parents=True, exist_ok=True)
    settings.trainer_status_path.write_text(json.dumps(status))


def test_health_command_exit_codes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    missing = _ccf_health(tmp_path)
    assert missing.returncode == 1 and missing.stdout.count("\n") == 1 and "no trainer status" in missing.stdout

    # a status written by the real loop: one good run a moment ago
    clock = Clock(runs=1)
    clock.now = datetime.now(UTC)
    with pytest.raises(Stop):
        run_every(settings, TrainConfig(), HOUR, timedelta(days=7), None, retrain=lambda s, e: "ok",
                  sleep=clock.sleep, clock=clock)
    fresh = _ccf_health(tmp_path)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert fresh.stdout.startswith("healthy: last retrain ok") and str(settings.trainer_status_path) in fresh.stdout

    now = datetime.now(UTC)
    _write(settings, _status(started=now.isoformat(), last_run=now.isoformat(), ok=False, consecutive_failures=3,
                             last_error="RuntimeError: boom"))
    failing = _ccf_health(tmp_path)
    assert failing.returncode == 1 and "3 failed retrains in a row" in failing.stdout and "boom" in failing.stdout
    assert _ccf_health(tmp_path, CCF_TRAINER__MAX_FAILURES="5").returncode == 0  # the limit comes from the settings

    old = now - timedelta(hours=3)
    _write(settings, _status(started=old.isoformat(), last_run=old.isoformat(), ok=True))
    stale = _ccf_health(tmp_path)
    assert stale.returncode == 1 and "last retrain ended" in stale.stdout
    assert _ccf_health(tmp_path, "--every", "2h").returncode == 0  # 3 h < 2 x 2 h + 10 min
    assert _ccf_health(tmp_path, "--grace", "61m").returncode == 0

    settings.trainer_status_path.write_text("{not json")
    assert _ccf_health(tmp_path).returncode == 1
    bad = _ccf_health(tmp_path, CCF_TRAINER__MAX_FAILURES="0")  # a settings error: 1 as well (Docker reserves 2)
    assert bad.returncode == 1 and bad.stdout.startswith("unhealthy: invalid settings: CCF_TRAINER__MAX_FAILURES")

"""``ccf train --every``: retrain on a rolling window of the store, forever, with a status file for the healthcheck.

:func:`rolling_window` is the window a retrain at some time reads; :func:`run_every` is the loop, which writes the
status ``ccf trainer-health`` reads and ends after too many failures in a row. Importing this module is quick (no
pandas, torch or MLflow): ``ccf trainer-health`` parses durations with it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccf.errors import RetrainFailedError
from ccf.settings import Settings

if TYPE_CHECKING:
    from models.train import TrainConfig

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d`` (or sums like ``1h30m``) → a timedelta.

    >>> parse_duration("1h30m"), parse_duration("7d")
    (datetime.timedelta(seconds=5400), datetime.timedelta(days=7))
    """
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h, 7d)")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def rolling_window(now: datetime, every: timedelta, span: timedelta) -> tuple[datetime, datetime]:
    """The training window of a retrain at ``now``: ``span`` ending at the last multiple of ``every`` (UTC epoch).

    >>> s, e = rolling_window(datetime(2025, 11, 8, 13, 47, tzinfo=UTC), timedelta(hours=1), timedelta(days=7))
    >>> s.isoformat(), e.isoformat()
    ('2025-11-01T13:00:00+00:00', '2025-11-08T13:00:00+00:00')
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    step = every.total_seconds()
    end_s = (now.timestamp() // step) * step
    end = datetime.fromtimestamp(end_s, tz=UTC)
    return end - span, end


def next_run(now: datetime, every: timedelta) -> datetime:
    """When the next retrain is due: the next multiple of ``every`` after ``now``."""
    return rolling_window(now, every, timedelta(0))[1] + every


def _now() -> datetime:
    return datetime.now(UTC)


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, at most 500 characters."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file :func:`run_every` writes, or ``None`` when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(path: Path, status: dict[str, Any]) -> None:
    """``status`` as JSON at ``path``, atomically: a reader sees the previous file or this one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)


def report_failure(settings: Settings, at: datetime, failures: int, error: str) -> None:
    """A ``retrain_failed`` row (venue ``trainer``) in the store's health table, best effort: a store that cannot
    be written is logged, never raised, so it cannot hide the training error."""
    from ccf.store.sinks import write_health

    row = {"ts": int(at.timestamp() * 1e9), "venue": "trainer", "symbol": "", "kind": "retrain_failed", "value": 1.0,
           "detail": f"{failures} in a row (max {settings.trainer.max_failures}): {error}"[:500], "seq": failures}
    write_health(settings, [row], what="the failed retrain")


def _store_retrain(settings: Settings, cfg: TrainConfig, symbols: Sequence[str] | None,
                   models: Sequence[str] | None) -> Callable[[datetime, datetime], str]:
    from models import registry
    from models.sources import frame_from_store
    from models.train import train

    client = registry.open_client(settings)

    def retrain(start: datetime, end: datetime) -> str:
        frame = frame_from_store(settings, int(start.timestamp() * 1e9), int(end.timestamp() * 1e9), symbols)
        result = train(frame, settings, cfg, models, client)
        return f"version {result.version}, {result.decision.reason}"

    return retrain


def run_every(settings: Settings, cfg: TrainConfig, every: timedelta, span: timedelta,
              symbols: Sequence[str] | None, models: Sequence[str] | None = None, *,
              retrain: Callable[[datetime, datetime], str] | None = None,
              sleep: Callable[[float], None] = time.sleep, clock: Callable[[], datetime] = _now) -> None:
    """Retrain on the rolling window from the store (``ccf train --every``): at start, then at every multiple of
    ``every``, until ``settings.trainer.max_failures`` runs in a row have failed; then :class:`RetrainFailedError`.

    A failed run is logged, written to the health table (:func:`report_failure`) and the loop goes on. After each
    run ``settings.trainer_status_path`` holds (see :func:`write_status`) ``started``, ``last_run`` (when it ended),
    ``ok``, ``consecutive_failures``, ``max_failures``, ``last_error`` and ``last_error_at`` (the latest failure, kept
    after a success), ``next_due``, ``every_s`` and ``window``; times are ISO 8601 UTC. ``ccf trainer-health`` reads
    it. The count of failures in a row carries over a restart (it is read back from that file), so a trainer that
    keeps failing stays unhealthy and exits again after its next failure, until a run succeeds.

    ``retrain(start, end)`` (default: read the store, :func:`train`, register) returns a line for the log; ``sleep``
    and ``clock`` are for tests.
    """
    path = settings.trainer_status_path
    limit = settings.trainer.max_failures
    previous = read_status(path) or {}
    failures = int(previous.get("consecutive_failures") or 0)
    started = clock()
    status: dict[str, Any] = {"last_run": None, "ok": None, "last_error": "", "last_error_at": None, **previous,
                              "started": started.isoformat(), "consecutive_failures": failures,
                              "max_failures": limit, "next_due": started.isoformat(),
                              "every_s": every.total_seconds()}
    write_status(path, status)
    if retrain is None:
        retrain = _store_retrain(settings, cfg, symbols, models)
    while True:
        start, end = rolling_window(clock(), every, span)
        failed: Exception | None = None
        try:
            summary = retrain(start, end)
        except Exception as exc:  # one bad window (no data yet, a store outage) must not end the loop
            failed = exc
            failures += 1
            logger.exception("retrain on %s..%s failed (%d in a row, at most %d)", start, end, failures, limit)
        else:
            failures = 0
            logger.info("retrain %s..%s: %s", start, end, summary)
        now = clock()
        due = next_run(now, every)
        status.update(last_run=now.isoformat(), ok=failed is None, consecutive_failures=failures,
                      next_due=due.isoformat(), window=[start.isoformat(), end.isoformat()])
        if failed is not None:
            status.update(last_error=one_line(failed), last_error_at=now.isoformat())
        write_status(path, status)
        if failed is not None:
            report_failure(settings, now, failures, status["last_error"])
            if failures >= limit:
                raise RetrainFailedError(
                    f"retrains failed in a row: {failures} (CCF_TRAINER__MAX_FAILURES={limit}), the last on "
                    f"{start.isoformat()}..{end.isoformat()}: {status['last_error']}") from failed
        sleep(max(0.0, (due - clock()).total_seconds()))

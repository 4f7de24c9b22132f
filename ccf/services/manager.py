"""Start, find and stop the local Kafka, QuestDB and MLflow of one run dir.

Each service lives in ``<run dir>/<name>/`` (config, data, logs) and is recorded in ``<run dir>/state.json``. ``up``
reuses a recorded service whose process is alive and answering, starts the rest on free loopback ports (the previous
ports when they are still free, so URLs stay stable), and waits until every one serves real requests. ``up`` and
``down`` hold ``<run dir>/.lock``, so two of them never race on one run dir.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccf.errors import ServiceError
from ccf.services.base import Driver, Launch
from ccf.services.process import (
    exit_code,
    free_ports,
    log_tail,
    pid_alive,
    pid_matches,
    port_is_free,
    spawn,
    stop_group,
    wait_for,
)
from ccf.services.state import SERVICES, STATE_FILE, ServiceRecord, State, load_state, save_state, status_payload

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20.0
REUSE_GRACE_S = 10.0


def default_drivers() -> dict[str, Driver]:
    """One driver per service name."""
    from ccf.services.kafka import KafkaDriver
    from ccf.services.mlflow_server import MLflowDriver
    from ccf.services.questdb import QuestDBDriver

    return {"kafka": KafkaDriver(), "questdb": QuestDBDriver(), "mlflow": MLflowDriver()}


def parse_only(text: str | None) -> tuple[str, ...]:
    """Service names from ``--only kafka,questdb`` (all of them when empty), in canonical order.

    >>> parse_only("mlflow, kafka"), parse_only(None)
    (('kafka', 'mlflow'), ('kafka', 'questdb', 'mlflow'))
    """
    if not text or not text.strip():
        return SERVICES
    names = {n.strip().lower() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(SERVICES))
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    return tuple(n for n in SERVICES if n in names)


@dataclass(frozen=True)
class ServiceView:
    """What ``status`` knows of one service: its record (if any) and whether it answers now."""

    name: str
    record: ServiceRecord | None
    answering: bool


@dataclass
class _Pending:
    driver: Driver
    launch: Launch
    record: ServiceRecord
    deadline: float


class ServiceManager:
    """The services of one run dir. Nothing happens until a method is called."""

    def __init__(
        self, run_dir: Path, *, cache_dir: Path | None = None, drivers: Mapping[str, Driver] | None = None
    ) -> None:
        self.run_dir = run_dir.expanduser().resolve()
        self.cache_dir = cache_dir
        self._drivers = dict(drivers) if drivers is not None else None

    @property
    def drivers(self) -> dict[str, Driver]:
        if self._drivers is None:
            self._drivers = default_drivers()
        return self._drivers

    def home(self, name: str) -> Path:
        """Where service ``name`` keeps config, data and logs."""
        return self.run_dir / name

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _owned(self, record: ServiceRecord) -> bool:
        return pid_matches(record.pid, str(self.home(record.name)))

    def _healthy(self, record: ServiceRecord, grace_s: float = 0.0) -> bool:
        """Ours, alive and answering; a live one that does not answer yet gets ``grace_s`` seconds."""
        driver = self.drivers[record.name]
        deadline = time.monotonic() + grace_s
        while self._owned(record):
            if driver.answering(record.ports):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return False

    # ----------------------------------------------------------------------------------------------- up
    def up(self, only: Iterable[str] = SERVICES) -> dict[str, dict[str, Any]]:
        """Make every service in ``only`` run and answer; return the ``status --json`` payload for them."""
        names = [n for n in SERVICES if n in set(only)]
        with self._lock():
            state = load_state(self.run_dir)
            previous = {name: dict(rec.ports) for name, rec in state.services.items()}
            previous = {**state.last_ports, **previous}
            keep: dict[str, ServiceRecord] = {}
            for name in names:
                record = state.services.get(name)
                if record is not None and self._healthy(record, grace_s=REUSE_GRACE_S):
                    logger.info("%s already running (pid %d); reusing it", name, record.pid)
                    keep[name] = record
                elif record is not None:
                    logger.info("%s recorded as pid %d but not answering; replacing it", name, record.pid)
                    self._stop(record)
                    del state.services[name]
            save_state(self.run_dir, state)
            to_start = [n for n in names if n not in keep]
            started = self._start(to_start, previous=previous, state=state)
            keep.update(started)
            return status_payload(keep)

    def _choose_ports(self, name: str, previous: dict[str, int] | None, taken: list[int]) -> dict[str, int]:
        roles = self.drivers[name].port_roles
        if previous is not None and set(previous) == set(roles):
            ports = list(previous.values())
            if all(port_is_free(p) for p in ports) and not set(ports) & set(taken):
                return dict(previous)
        return dict(zip(roles, free_ports(len(roles), avoid=taken), strict=True))

    def _start(
        self, names: list[str], *, previous: dict[str, dict[str, int]], state: State
    ) -> dict[str, ServiceRecord]:
        if not names:
            return {}
        taken = [p for r in state.services.values() for p in r.ports.values()]
        launches: list[tuple[Driver, Launch, dict[str, int]]] = []
        for name in names:  # fetch jars and write configs for all before starting any
            driver = self.drivers[name]
            ports = self._choose_ports(name, previous.get(name), taken)
            taken.extend(ports.values())
            home = self.home(name)
            home.mkdir(parents=True, exist_ok=True)
            launches.append((driver, driver.prepare(home, ports, self.cache_dir), ports))
        pending: list[_Pending] = []
        try:
            for driver, launch, ports in launches:
                pid = spawn(launch.cmd, log_path=launch.log, cwd=launch.cwd, env=launch.env)
                record = ServiceRecord(driver.name, pid, ports, launch.version, str(launch.log), time.time())
                logger.info("started %s %s (pid %d, ports %s)", driver.name, launch.version, pid, ports)
                state.services[driver.name] = record
                state.last_ports.pop(driver.name, None)
                pending.append(_Pending(driver, launch, record, time.monotonic() + driver.startup_timeout_s))
            save_state(self.run_dir, state)  # so `down` finds them even if this process dies while waiting
            self._wait(pending)
        except BaseException:
            for p in pending:
                self._stop(p.record)
                state.services.pop(p.record.name, None)
            save_state(self.run_dir, state)
            raise
        save_state(self.run_dir, state)
        return {p.record.name: p.record for p in pending}

    def _wait(self, pending: list[_Pending]) -> None:
        waiting = list(pending)
        t0 = time.monotonic()
        while waiting:
            for p in list(waiting):
                if p.driver.answering(p.record.ports):
                    logger.info("%s answering after %.1f s", p.record.name, time.monotonic() - t0)
                    waiting.remove(p)
                elif not pid_alive(p.record.pid):
                    code = exit_code(p.record.pid)
                    raise ServiceError(self._failure(p, f"exited with status {code} while starting"))
                elif time.monotonic() > p.deadline:
                    raise ServiceError(self._failure(p, f"did not answer within {p.driver.startup_timeout_s:.0f} s"))
            if waiting:
                time.sleep(0.3)

    @staticmethod
    def _failure(p: _Pending, what: str) -> str:
        parts = [f"{p.record.name} {what} (ports {p.record.ports})."]
        for log in (p.launch.detail_log, p.launch.log):
            if log is not None and (tail := log_tail(log)):
                parts.append(f"--- last lines of {log} ---\n{tail}")
        if len(parts) == 1:
            parts.append(f"(its log {p.launch.log} is empty)")
        return "\n".join(parts)

    # --------------------------------------------------------------------------------------------- down
    def _stop(self, record: ServiceRecord) -> None:
        # A live pid whose command line is not ours was reused by another process: never signal it.
        if (
            pid_alive(record.pid)
            and not self._owned(record)
            and not wait_for(lambda: not pid_alive(record.pid), timeout=2.0)  # an exiting process has no cmdline
        ):
            logger.warning("pid %d of %s now belongs to another process; not stopping it", record.pid, record.name)
            return
        stop_group(record.pid, name=record.name, timeout=STOP_TIMEOUT_S)
        busy = list(record.ports.values())
        if not wait_for(lambda: all(port_is_free(p) for p in busy), timeout=10.0):
            logger.warning("%s ports %s still busy after stop", record.name, busy)

    def down(self, only: Iterable[str] = SERVICES) -> list[str]:
        """Stop the services in ``only`` that this run dir started; return the names stopped. No-op when none run."""
        names = set(only)
        stopped: list[str] = []
        if not (self.run_dir / STATE_FILE).exists():
            return stopped
        with self._lock():
            state = load_state(self.run_dir)
            for name in [n for n in SERVICES if n in names and n in state.services]:
                record = state.services.pop(name)
                state.last_ports[name] = dict(record.ports)
                if pid_alive(record.pid):
                    stopped.append(name)
                self._stop(record)
                save_state(self.run_dir, state)
        return stopped

    # ------------------------------------------------------------------------------------------- status
    def inspect(self, only: Iterable[str] = SERVICES) -> list[ServiceView]:
        """Every service in ``only`` with its record and whether it answers right now."""
        state = load_state(self.run_dir)
        views = []
        for name in [n for n in SERVICES if n in set(only)]:
            record = state.services.get(name)
            views.append(ServiceView(name, record, record is not None and self._healthy(record)))
        return views

    def status(self, only: Iterable[str] = SERVICES) -> dict[str, dict[str, Any]]:
        """The ``status --json`` payload of the services that run and answer (empty when none)."""
        return status_payload({v.name: v.record for v in self.inspect(only) if v.answering and v.record})

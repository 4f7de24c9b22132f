"""A scenario's pipeline run through ``ccf stack``: the venue, ingest and features roles of the stack's own
definition (``ccf/stack/roles.py``: commands, default settings, recovery directory) under supervisord, on the
suite's Kafka and QuestDB. supervisord, not the harness, restarts what dies; the harness only kills and waits.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from ccf.services.process import log_tail
from ccf.stack.events import read_events
from ccf.stack.manager import StackManager, StackOptions
from ccf.stack.supervisor import Spec, rpc
from tests.faults.harness import Exit, Monitor, Pipeline

LIVE_STATES = ("STARTING", "RUNNING", "BACKOFF")


class SupervisedProc:
    """One role of the stack, seen as the harness sees a process it started (:class:`tests.faults.harness.Proc`)."""

    def __init__(self, name: str, manager: StackManager) -> None:
        self.name, self.manager = name, manager
        self.expected_exit = True  # supervisord restarts it: the harness monitor never does
        self.killed: list[int] = []

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = rpc(self.manager.paths).supervisor.getProcessInfo(self.name)
        return info

    @property
    def popen(self) -> SupervisedProc:
        return self

    @property
    def pid(self) -> int:
        return int(self._info()["pid"])

    @property
    def alive(self) -> bool:
        return self._info()["statename"] in LIVE_STATES

    @property
    def returncode(self) -> int | None:
        info = self._info()
        return None if info["statename"] in LIVE_STATES else int(info["exitstatus"])

    @property
    def cmd(self) -> list[str]:
        return Spec.read(self.manager.paths.spec(self.name)).argv

    @property
    def env(self) -> dict[str, str]:
        return Spec.read(self.manager.paths.spec(self.name)).env

    def start(self) -> None:
        """Nothing: supervisord starts it again by itself."""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        pid = self.pid
        if pid:
            self.killed.append(pid)
            os.kill(pid, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def tail(self, n: int = 40) -> str:
        return log_tail(self.manager.paths.log(self.name), n)


@dataclass
class StackPipeline(Pipeline):
    """:class:`Pipeline` with its processes under ``ccf stack`` (the capture replayed with its own times)."""

    manager: StackManager = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.manager = StackManager(self.work / "stack")
        self.venue = SupervisedProc("venue", self.manager)  # type: ignore[assignment]
        self.ingest = SupervisedProc("ingest", self.manager)  # type: ignore[assignment]
        self.features = SupervisedProc("features", self.manager)  # type: ignore[assignment]
        self.monitor = Monitor(self)

    @property
    def rest_url(self) -> str:
        manager = getattr(self, "manager", None)  # the base class asks before the stack exists
        url = manager.state().get("venue_url") if manager is not None else None
        return str(url) if url else f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        options = StackOptions(
            replay=self.captures, speed=self.speed, shift_to_now=False, services_env=self.stack.env,
            only=("venue", "ingest", "features"), wait_healthy=False, timeout_s=120,
            extra_env={"CCF_KAFKA__TOPIC_PREFIX": self.kafka_prefix, "CCF_QUESTDB__TABLE_PREFIX": self.table_prefix},
        )
        self.t_start = time.monotonic()
        self.manager.up(options)
        self.note("stack up: venue, ingest, features under supervisord")
        self.monitor.start()

    def restart(self, proc: Any, cmd: list[str] | None = None) -> float:
        """Wait until supervisord has started ``proc`` again (a new pid, running); returns when."""
        assert cmd is None, "a supervised role runs its own command"
        killed = proc.killed[-1] if proc.killed else None
        self.wait_until(lambda: proc._info()["statename"] == "RUNNING" and proc.pid != killed, 120,
                        f"{proc.name} restarted by supervisord")
        return time.monotonic()

    def exits(self) -> list[Exit]:
        """Roles that died by themselves (not by the harness's kills), from the stack's event log."""
        ours = {str(pid) for p in (self.venue, self.ingest, self.features) for pid in p.killed}  # type: ignore[attr-defined]
        return [Exit(e["role"], 0.0, e.get("exit_status"), e.get("last_error", ""))
                for e in read_events(self.manager.paths.events)
                if e.get("event") in ("died", "backoff", "fatal") and e.get("pid") not in ours]

    def drain(self, timeout: float = 240.0, stable_s: float = 6.0) -> float:
        done = super().drain(timeout, stable_s)
        self.monitor.exits.extend(self.exits())
        return done

    def close(self, keep: bool = False) -> None:
        self.monitor.stop()
        self.manager.down()
        self.venue = self.ingest = self.features = _Gone()  # type: ignore[assignment]
        super().close(keep=keep)


class _Gone:
    """What the base class's close kills: nothing left (``ccf stack down`` stopped it all)."""

    name = "gone"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        return None

    def tail(self, n: int = 40) -> str:
        return ""


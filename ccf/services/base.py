"""The shape every local service driver has: what to launch, and how to tell that it answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one service process."""

    cmd: list[str]
    log: Path
    cwd: Path
    version: str
    env: dict[str, str] | None = None
    detail_log: Path | None = None
    """The service's own log file when it is not ``log`` (stdout); its tail explains failed starts."""


class Driver(Protocol):
    """A service Kafka, QuestDB or MLflow: prepared in a run dir, launched, then probed until it answers."""

    name: str
    port_roles: tuple[str, ...]
    startup_timeout_s: float

    def prepare(self, home: Path, ports: dict[str, int], cache_dir: Path | None) -> Launch:
        """Fetch what is missing and write config under ``home``; return how to start the process."""
        ...

    def answering(self, ports: dict[str, int]) -> bool:
        """True when the service on ``ports`` serves real requests."""
        ...

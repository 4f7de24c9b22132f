"""What ``ccf services up`` started, kept in ``<run dir>/state.json`` so ``status`` and ``down`` can find it.

Also the two views of running services that the CLI prints: the ``status --json`` payload and ``export`` lines.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ccf.errors import ServiceError

STATE_FILE = "state.json"
SERVICES = ("kafka", "questdb", "mlflow")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServiceRecord:
    """One running service: its process-group leader, ports by role, version and log file."""

    name: str
    pid: int
    ports: dict[str, int]
    version: str
    log: str
    started_at: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            ports={str(k): int(v) for k, v in dict(data["ports"]).items()},
            version=str(data.get("version", "")),
            log=str(data.get("log", "")),
            started_at=float(data.get("started_at", 0.0)),
        )


@dataclass
class State:
    """All records of one run dir, by service name."""

    services: dict[str, ServiceRecord] = field(default_factory=dict)
    last_ports: dict[str, dict[str, int]] = field(default_factory=dict)
    """Ports of services stopped by ``down``, offered again by the next ``up`` so URLs stay stable."""

    def to_json(self) -> str:
        data = {
            "services": {k: asdict(v) for k, v in sorted(self.services.items())},
            "last_ports": dict(sorted(self.last_ports.items())),
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        return cls(
            services={k: ServiceRecord.from_dict(v) for k, v in dict(data.get("services", {})).items()},
            last_ports={
                str(k): {str(r): int(p) for r, p in dict(v).items()}
                for k, v in dict(data.get("last_ports", {})).items()
            },
        )


def load_state(run_dir: Path) -> State:
    """The state of ``run_dir`` (empty when there is none)."""
    path = run_dir / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return State()
    try:
        return State.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceError(f"unreadable service state {path}: {exc}; remove it and stop leftovers by hand") from exc


def save_state(run_dir: Path, state: State) -> None:
    """Write ``state`` atomically; remove the file when it holds nothing."""
    path = run_dir / STATE_FILE
    if not state.services and not state.last_ports:
        path.unlink(missing_ok=True)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def endpoint(name: str, record: ServiceRecord) -> dict[str, Any]:
    """How clients reach ``record``: the ``status --json`` entry of one service.

    >>> endpoint("questdb", ServiceRecord("questdb", 1, {"http": 9000, "pg": 8812}, "9.3.4", ""))["pg_port"]
    8812
    """
    if name == "kafka":
        return {"bootstrap_servers": f"{LOOPBACK}:{record.ports['broker']}", "version": record.version}
    if name == "questdb":
        http_url = f"http://{LOOPBACK}:{record.ports['http']}"
        return {
            "http_url": http_url,
            "pg_port": record.ports["pg"],
            "ilp_http_url": http_url,
            "version": record.version,
        }
    if name == "mlflow":
        return {"tracking_uri": f"http://{LOOPBACK}:{record.ports['http']}"}
    raise ValueError(f"unknown service {name!r}")


def status_payload(records: dict[str, ServiceRecord]) -> dict[str, dict[str, Any]]:
    """The ``status --json`` object for the services in ``records`` (assumed running and answering), in fixed order."""
    return {name: endpoint(name, records[name]) for name in SERVICES if name in records}


def env_vars(payload: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The ``CCF_*`` settings that point CCF at the services in ``payload``.

    >>> env_vars({"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}})
    {'CCF_MLFLOW__TRACKING_URI': 'http://127.0.0.1:5000'}
    """
    env: dict[str, str] = {}
    if "kafka" in payload:
        env["CCF_KAFKA__BOOTSTRAP_SERVERS"] = str(payload["kafka"]["bootstrap_servers"])
    if "questdb" in payload:
        q = payload["questdb"]
        env["CCF_QUESTDB__HTTP_URL"] = str(q["http_url"])
        env["CCF_QUESTDB__ILP_HTTP_URL"] = str(q["ilp_http_url"])
        env["CCF_QUESTDB__PG_PORT"] = str(q["pg_port"])
    if "mlflow" in payload:
        env["CCF_MLFLOW__TRACKING_URI"] = str(payload["mlflow"]["tracking_uri"])
    return env


def export_lines(payload: dict[str, dict[str, Any]]) -> list[str]:
    """``export NAME=value`` lines for a POSIX shell (``eval "$(ccf services up)"``)."""
    return [f"export {k}={shlex.quote(v)}" for k, v in env_vars(payload).items()]

"""docker/compose.yaml against the one definition of the roles (ccf/stack/roles.py) that ``ccf stack`` runs.

The roles are built for compose's layout (services by hostname, data root ``/data``, a live venue, one features
process) and every CCF service of the compose file must agree with its role: command, ``CCF_*``/``BYTEWAX_*``
settings, ``depends_on``, health check, restart policy, the data volume for what it writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ccf.stack.roles import INFRA, Layout, Role, Venue, define_roles
from ccf.stack.supervisor import Paths, native_argv, render

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
ALIVE = ["CMD", "python", "-c", "import os; os.kill(1, 0)"]
"""Compose's check for a role that is healthy while it runs (its process is PID 1)."""


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _compose_roles() -> list[Role]:
    compose = _compose()
    services_env = {k: v for k, v in compose["x-ccf-env"].items() if k != "CCF_RUN_DIR"}
    layout = Layout(services_env=services_env, data_root="/data", app_host="0.0.0.0", app_port=5006)
    return define_roles(layout, Venue(mode="live"))


def _ours(env: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if k.startswith(("CCF_", "BYTEWAX_"))}


ROLES = [r for r in _compose_roles() if r.name not in INFRA]


def test_every_role_is_a_compose_service_and_back() -> None:
    services = set(_compose()["services"]) - {"grafana"}  # Grafana is compose-only: AGPL, not installable here
    assert {r.service for r in _compose_roles()} == services


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_compose_service_is_its_role(role: Role) -> None:
    svc = _compose()["services"][role.service]
    assert svc["command"] == list(role.command)
    assert _ours(svc.get("environment", {})) == _ours(dict(role.env))
    assert set(svc.get("depends_on", {})) == set(role.needs)
    expected_health = ["CMD", *role.health] if role.health else ALIVE
    assert svc["healthcheck"]["test"] == expected_health
    assert role.restart.policy == "always" and svc["restart"] == "unless-stopped"
    if role.writable:
        assert "ccf-data:/data" in svc["volumes"]
        assert all(not Path(p).is_absolute() for p in role.writable)


def test_infra_roles_have_health_checks_and_restarts() -> None:
    compose = _compose()["services"]
    for name in INFRA:
        assert "healthcheck" in compose[name], name
        assert compose[name]["restart"] == "unless-stopped", name


def test_native_roles_replay_a_capture_through_the_local_venue(tmp_path: Path) -> None:
    layout = Layout(services_env={"CCF_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}, data_root=str(tmp_path),
                    processes=2, cluster_addresses=("127.0.0.1:7001", "127.0.0.1:7002"))
    cap = tmp_path / "cap.gz"
    roles = {r.name: r for r in define_roles(layout, Venue(mode="replay", files=(cap,), speed=10, port=9999,
                                                             symbols=("ETH-USDT",)))}
    assert roles["venue"].command[:5] == ("ccf", "venue-server", "serve", "--mode", "replay")
    assert "--shift-to-now" in roles["venue"].command and str(cap) in roles["venue"].command
    assert roles["ingest"].env["CCF_VENUES__WS_URL"] == "ws://127.0.0.1:9999"
    assert roles["ingest"].env["CCF_VENUES__SYMBOLS"] == '["ETH-USDT"]'
    assert roles["ingest"].needs[-1] == "venue"
    cluster = [roles["features-0"], roles["features-1"]]
    assert [r.command[-4:] for r in cluster] == [("-i", "0", "-a", "127.0.0.1:7001;127.0.0.1:7002"),
                                                 ("-i", "1", "-a", "127.0.0.1:7001;127.0.0.1:7002")]
    assert all(r.env["BYTEWAX_RECOVERY_DIRECTORY"] == f"{tmp_path}/recovery" for r in cluster)
    assert all(r.env["CCF_RUN_DIR"] == str(tmp_path) for r in roles.values() if r.name not in INFRA)


def test_supervisord_config_has_every_role_and_the_listener(tmp_path: Path) -> None:
    roles = _compose_roles()
    conf = render(Paths(tmp_path), roles, {"CCF_STACK_DIR": str(tmp_path)})
    for role in roles:
        assert f"[program:{role.name}]" in conf
    assert "[eventlistener:ccf-events]" in conf and "events=PROCESS_STATE" in conf
    assert conf.count("autostart=false") == len(roles)  # up starts them in order, once their needs are healthy
    assert native_argv(("python", "-m", "x"))[1:] == ["-m", "x"]

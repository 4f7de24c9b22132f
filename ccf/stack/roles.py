"""The roles of the CCF stack, defined once: what each runs, with which settings, how it is probed and restarted.

``ccf stack`` runs these roles as native processes under supervisord; ``docker/compose.yaml`` runs the same roles as
containers and is tested against this definition (``tests/unit/test_stack_roles.py``: commands, ``CCF_*``
variables, dependencies, health checks and restart policies must agree), so the two cannot drift.

A role's command is written as users type it (``python -m bytewax.run flows.ingest``, ``ccf predict``); natively
``python`` and ``ccf`` become this virtual environment's. Every writable path lives under one data root (``/data``
in compose, ``<run dir>/data`` natively), named relative to it in :attr:`Role.writable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ccf.services.state import SERVICES

INFRA = SERVICES
"""Roles the services manager's drivers launch (:mod:`ccf.services`)."""

Restart = Literal["always", "on-failure", "never"]


@dataclass(frozen=True)
class RestartPolicy:
    """When and how a role that ends is started again (supervisord's terms in brackets).

    ``policy`` ``always`` is compose's ``unless-stopped`` [``autorestart=true``]. A role must run ``start_s`` seconds
    to count as started [``startsecs``]; one that ends sooner is retried ``retries`` times with a growing delay
    [``startretries``, supervisord's backoff] and then given up (state ``FATAL``). One that ran longer is started
    again after the launcher's own backoff (:func:`ccf.backoff.backoff_delay`, CCF's one retry rule): ``base_s``
    doubling per recent death, capped at ``max_s``, jittered.
    """

    policy: Restart = "always"
    start_s: int = 5
    retries: int = 10
    stop_s: int = 30
    base_s: float = 1.0
    max_s: float = 60.0


@dataclass(frozen=True)
class Role:
    """One process of the stack."""

    name: str
    command: tuple[str, ...]
    """As users type it; ``python``/``ccf`` are resolved to this environment's natively."""
    env: Mapping[str, str] = field(default_factory=dict)
    health: tuple[str, ...] = ()
    """A command that exits 0 while the role is healthy (compose's ``healthcheck.test``); empty: running is healthy."""
    needs: tuple[str, ...] = ()
    """Roles that must be healthy before this one starts (compose's ``depends_on``)."""
    writable: tuple[str, ...] = ()
    """Paths under the data root this role writes."""
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    service: str = ""
    """Its compose service (``features`` for every process of a cluster); empty: natively only (the venue server)."""


@dataclass(frozen=True)
class Venue:
    """Where the market data comes from: the local venue server (replaying captures, or synthetic) or a live venue."""

    mode: Literal["replay", "synthetic", "live"] = "synthetic"
    files: tuple[Path, ...] = ()
    speed: float = 1.0
    source: str = "binance"
    """The ingest venue (``binance`` or ``binance_futures`` for the local server, which speaks Binance's protocol)."""
    symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT")
    port: int = 0
    shift_to_now: bool = True
    """Move the feed's times so that its first event is now (the trainer's rolling window, the app and Grafana look
    at recent times); off, a replay keeps the capture's own times (the synthetic market starts at a fixed date)."""


@dataclass(frozen=True)
class Layout:
    """Where things are: the services' addresses (``CCF_*`` variables), the data root, the app port."""

    services_env: Mapping[str, str]
    data_root: str
    app_host: str = "127.0.0.1"
    app_port: int = 5006
    processes: int = 1
    cluster_addresses: tuple[str, ...] = ()
    """``host:port`` of each features process when ``processes`` > 1."""


def _venue_command(venue: Venue) -> tuple[str, ...]:
    cmd = ["ccf", "venue-server", "serve", "--mode", venue.mode, "--speed", str(venue.speed), "--port", str(venue.port)]
    if venue.mode == "replay":
        cmd += [a for f in venue.files for a in ("--file", str(f))]
    else:
        cmd += ["--symbols", ",".join(venue.symbols)]
    cmd += ["--shift-to-now"] if venue.shift_to_now else []
    if venue.source == "binance_futures":
        cmd += ["--market", "futures"]
    return tuple(cmd)


def _json_list(items: Sequence[str]) -> str:
    return "[" + ",".join(f'"{s}"' for s in items) + "]"


def define_roles(layout: Layout, venue: Venue, trainer_every: str = "1h") -> list[Role]:
    """Every role of the stack in start order (the infra roles first), for ``layout`` and ``venue``."""
    data = layout.data_root.rstrip("/")
    common = {**layout.services_env, "CCF_RUN_DIR": data}
    roles = [
        Role("kafka", (), service="kafka"),
        Role("questdb", (), service="questdb"),
        Role("mlflow", (), needs=(), writable=("mlflow",), service="mlflow"),
    ]
    ingest_env = dict(common)
    if venue.mode != "live":
        base = f"127.0.0.1:{venue.port}"
        roles.append(Role("venue", _venue_command(venue), health=("ccf", "stack", "probe", "venue"),
                          env={**common, "CCF_VENUES__REST_URL": f"http://{base}"}))
        ingest_env.update({"CCF_VENUES__SOURCE": venue.source, "CCF_VENUES__SYMBOLS": _json_list(venue.symbols),
                           "CCF_VENUES__WS_URL": f"ws://{base}", "CCF_VENUES__REST_URL": f"http://{base}"})
    needs_data = ("kafka", "questdb")
    # a replay ends: ingest then exits 0 and stays done; a live or synthetic feed never ends, so any exit restarts it
    ingest_restart = RestartPolicy(policy="on-failure" if venue.mode == "replay" else "always")
    roles.append(Role("ingest", ("python", "-m", "bytewax.run", "flows.ingest"), env=ingest_env,
                      needs=(*needs_data, *(("venue",) if venue.mode != "live" else ())), service="ingest",
                      restart=ingest_restart))
    features_env = {**common, "BYTEWAX_RECOVERY_DIRECTORY": f"{data}/recovery", "BYTEWAX_SNAPSHOT_INTERVAL": "5",
                    "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "0"}
    features_cmd = ("python", "-m", "bytewax.run", "flows.features")
    probe = ("ccf", "stack", "probe", "features")
    if layout.processes <= 1:
        roles.append(Role("features", features_cmd, env=features_env, health=probe, needs=(*needs_data, "ingest"),
                          writable=("recovery",), service="features"))
    else:
        addresses = ";".join(layout.cluster_addresses)
        for i in range(layout.processes):
            roles.append(Role(f"features-{i}", (*features_cmd, "-i", str(i), "-a", addresses), env=features_env,
                              health=probe, needs=(*needs_data, "ingest"), writable=("recovery",), service="features"))
    roles += [
        Role("trainer", ("ccf", "train", "--every", trainer_every), env=common, health=("ccf", "trainer-health"),
             needs=(*needs_data, "mlflow"), writable=("tft-checkpoints", "status"), service="trainer"),
        Role("predictor", ("ccf", "predict"), env=common, needs=(*needs_data, "mlflow"), service="predictor"),
        Role("app", ("ccf", "app"), health=("ccf", "stack", "probe", "app"), needs=("questdb",), service="app",
             env={**common, "CCF_APP__HOST": layout.app_host, "CCF_APP__PORT": str(layout.app_port)}),
    ]
    return roles


def by_name(roles: Sequence[Role]) -> dict[str, Role]:
    """Roles keyed by name."""
    return {r.name: r for r in roles}

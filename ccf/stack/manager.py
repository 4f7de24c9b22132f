"""``ccf stack up/status/logs/down``: the whole topology of ``docker/compose.yaml`` as native processes under one
supervisord, in one run dir.

``up`` writes each role's launch spec and supervisord's config (:mod:`ccf.stack.supervisor`), starts supervisord,
then starts the roles in order, each once the roles it needs are healthy: Kafka, QuestDB and MLflow (the services
manager's drivers prepare them: jars, config, ports), the topics (4 partitions for a cluster), the features job's
recovery partitions, the venue server, ingest, features, trainer, predictor and app. It returns once every role is
healthy, or raises after ``timeout_s`` naming the roles that are not (the stack keeps running for ``logs``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccf.errors import ConfigError, ServiceError
from ccf.services.manager import default_drivers
from ccf.services.process import free_ports, pid_alive, port_is_free, wait_for
from ccf.services.state import ServiceRecord, env_vars, status_payload
from ccf.stack.events import read_events, restarts
from ccf.stack.replay import venue_for
from ccf.stack.roles import INFRA, Layout, Role, by_name, define_roles
from ccf.stack.supervisor import MARKER, Paths, Spec, native_argv, render, rpc, stack_processes, supervisord_pid

logger = logging.getLogger(__name__)

RAW_TOPICS = ("book", "trades", "klines", "news", "dlq", "health", "features", "predictions", "scores")


@dataclass(frozen=True)
class StackOptions:
    """What ``ccf stack up`` was asked for."""

    replay: tuple[Path, ...] = ()
    speed: float = 1.0
    processes: int = 1
    live: bool = False
    symbols: tuple[str, ...] = ()
    trainer_every: str = "1h"
    shift_to_now: bool = True
    app_port: int = 0
    timeout_s: float = 120.0
    cache_dir: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """More ``CCF_*`` settings for every CCF role (e.g. a topic prefix)."""
    services_env: Mapping[str, str] | None = None
    """Use these Kafka/QuestDB/MLflow (their ``CCF_*`` variables) instead of starting them."""
    only: tuple[str, ...] | None = None
    """Run only these roles (``features`` names every process of a cluster)."""
    wait_healthy: bool = True
    """Return once every role is healthy (else once every role is started)."""


def _base_env(run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCF_", "SUPERVISOR_", "BYTEWAX_"))}
    env.update({MARKER: str(run_dir), "PYTHONUNBUFFERED": "1"})
    return env


def _user_settings() -> dict[str, str]:
    """The ``CCF_*`` settings ``up`` was started with: every CCF role gets them (as compose's ``env_file``), under
    what the role itself sets (the services' addresses, the venue, the data root)."""
    return {k: v for k, v in os.environ.items() if k.startswith("CCF_") and k != MARKER}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")[:160]
    except OSError:
        return "?"


class StackManager:
    """The stack of one run dir. Nothing happens until a method is called."""

    def __init__(self, run_dir: Path) -> None:
        self.paths = Paths(run_dir.expanduser().resolve())

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.paths.stack.mkdir(parents=True, exist_ok=True)
        with (self.paths.stack / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def state(self) -> dict[str, Any]:
        """What ``up`` recorded (``{}`` before the first ``up``)."""
        try:
            out: dict[str, Any] = json.loads(self.paths.state.read_text())
        except (OSError, ValueError):
            return {}
        return out

    # ----------------------------------------------------------------------------------------------- up
    def up(self, options: StackOptions) -> dict[str, Any]:
        """Start the stack and wait until every role is healthy; return :meth:`status`."""
        if options.processes < 1:
            raise ConfigError("--processes must be at least 1")
        with self._lock():
            if supervisord_pid(self.paths) is not None:
                raise ServiceError(f"a stack already runs in {self.paths.run_dir}: `ccf stack status` or "
                                   "`ccf stack down` first")
            if left := stack_processes(self.paths.run_dir):
                raise ServiceError(f"processes of an earlier stack in {self.paths.run_dir} still run (pids "
                                   f"{', '.join(map(str, left))}): `ccf stack down` first")
            roles = self._prepare(options)
            self._start_supervisord()
        t0 = time.monotonic()
        deadline = t0 + options.timeout_s
        try:
            self._start_in_order(roles, options, deadline)
        except Exception as exc:
            raise ServiceError(f"the stack did not start: {' '.join(str(exc).split())[:300]} (see `ccf stack logs "
                               "ROLE`; `ccf stack down` stops what did)") from exc
        status = self.status()
        if not options.wait_healthy:
            return status
        bad = [n for n, r in status["roles"].items() if not r["healthy"]]
        if bad:
            detail = "; ".join(f"{n}: {status['roles'][n]['detail']}" for n in bad)
            raise ServiceError(f"not healthy after {options.timeout_s:.0f} s: {detail} (see `ccf stack logs ROLE`; "
                               "`ccf stack down` stops it)")
        logger.info("stack healthy in %.1f s", time.monotonic() - t0)
        return status

    def _prepare(self, options: StackOptions) -> list[Role]:
        venue = venue_for(options, 0)  # a bad --replay fails here, before any service is prepared
        drivers = default_drivers()
        previous = self.state().get("ports", {})
        taken: list[int] = []
        launches, records = {}, {}
        for name in INFRA if options.services_env is None else ():
            roles_ports = drivers[name].port_roles
            old = previous.get(name, {})
            if set(old) == set(roles_ports) and all(port_is_free(p) for p in old.values()):
                ports = {k: int(v) for k, v in old.items()}
            else:
                ports = dict(zip(roles_ports, free_ports(len(roles_ports), avoid=taken), strict=True))
            taken += list(ports.values())
            home = self.paths.run_dir / name
            home.mkdir(parents=True, exist_ok=True)
            launches[name] = drivers[name].prepare(home, ports, options.cache_dir)
            records[name] = ServiceRecord(name, 0, ports, launches[name].version, str(launches[name].log), time.time())
        payload = status_payload(records)
        venue_port, app_port, *cluster = free_ports(2 + (options.processes if options.processes > 1 else 0),
                                                     avoid=taken)
        venue = dataclasses.replace(venue, port=venue_port)
        services_env = env_vars(payload) if options.services_env is None else dict(options.services_env)
        layout = Layout(services_env=services_env, data_root=str(self.paths.data),
                        app_port=options.app_port or app_port, processes=options.processes,
                        cluster_addresses=tuple(f"127.0.0.1:{p}" for p in cluster))
        roles = [r for r in define_roles(layout, venue, options.trainer_every)
                 if (options.services_env is None or r.name not in INFRA)
                 and (options.only is None or r.name.partition("-")[0] in options.only)]
        base = _base_env(self.paths.run_dir)
        self.paths.data.mkdir(parents=True, exist_ok=True)
        if self.paths.events.exists():  # restarts are counted per `up`; the last run's events stay beside
            self.paths.events.replace(self.paths.events.with_suffix(".previous.jsonl"))
        for role in roles:
            r = role.restart
            if role.name in INFRA:
                launch = launches[role.name]
                env = {**{k: v for k, v in (launch.env or os.environ).items() if not k.startswith("CCF_")},
                       MARKER: str(self.paths.run_dir)}
                spec = Spec(role.name, list(launch.cmd), env, str(launch.cwd), str(self.paths.events), r.base_s,
                            r.max_s)
            else:
                env = {**base, **_user_settings(), **role.env, **options.extra_env}
                spec = Spec(role.name, native_argv(role.command), env, str(self.paths.data), str(self.paths.events),
                            r.base_s, r.max_s)
            spec.write(self.paths.spec(role.name))
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self.paths.conf.write_text(render(self.paths, roles, {MARKER: str(self.paths.run_dir)},
                                          {**_user_settings(), **layout.services_env, **options.extra_env}))
        record = {
            "run_dir": str(self.paths.run_dir), "ports": {n: rec.ports for n, rec in records.items()},
            "services": payload, "roles": [r.name for r in roles], "processes": options.processes,
            "health": {r.name: list(r.health) for r in roles if r.health},
            "env": {**layout.services_env, **options.extra_env}, "venue": venue.mode,
            "app_url": f"http://127.0.0.1:{layout.app_port}", "started": time.time(),
            "venue_url": f"http://127.0.0.1:{venue.port}" if venue.mode != "live" else None,
        }
        self.paths.state.write_text(json.dumps(record, indent=1))
        return roles

    def _start_supervisord(self) -> None:
        self.paths.socket.unlink(missing_ok=True)
        env = _base_env(self.paths.run_dir)
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.paths.conf)],
                                env=env, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise ServiceError(f"supervisord did not start: {(result.stderr or result.stdout).strip()[-500:]}")
        if not wait_for(lambda: self._rpc_state() == "RUNNING", timeout=30):
            raise ServiceError(f"supervisord did not answer on {self.paths.socket} within 30 s")

    def _rpc_state(self) -> str | None:
        try:
            return str(rpc(self.paths).supervisor.getState()["statename"])
        except Exception:  # not up yet: any transport error
            return None

    def _start_in_order(self, roles: list[Role], options: StackOptions, deadline: float) -> None:
        proxy = rpc(self.paths).supervisor
        healthy: set[str] = set()
        named = by_name(roles)
        infra = [n for n in INFRA if n in named]
        for name in infra:
            proxy.startProcess(name, False)
        self._wait_healthy(infra, named, healthy, deadline)
        self._make_topics(self.state()["env"]["CCF_KAFKA__BOOTSTRAP_SERVERS"], options)
        self._init_recovery(options.processes)
        for role in roles:
            if role.name in INFRA:
                continue
            self._wait_healthy([n for n in role.needs if n in named], named, healthy, deadline)
            logger.info("starting %s", role.name)
            proxy.startProcess(role.name, False)
        if options.wait_healthy:
            self._wait_healthy([r.name for r in roles], named, healthy, deadline)

    def _wait_healthy(self, names: Any, named: dict[str, Role], healthy: set[str], deadline: float) -> None:
        waiting = [n for n in names if n not in healthy]
        while waiting:
            with ThreadPoolExecutor(max_workers=max(1, len(waiting))) as pool:
                results = dict(zip(waiting, pool.map(lambda n: self.check(named[n])[0], waiting), strict=True))
            healthy.update(n for n, ok in results.items() if ok)
            waiting = [n for n in waiting if n not in healthy]
            if waiting and time.monotonic() > deadline:
                return
            if waiting:
                time.sleep(1.0)

    def _make_topics(self, bootstrap: str, options: StackOptions) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        prefix = options.extra_env.get("CCF_KAFKA__TOPIC_PREFIX", "ccf.")
        partitions = 4 if options.processes > 1 else 1
        admin = AdminClient({"bootstrap.servers": bootstrap})
        existing = set(admin.list_topics(timeout=30).topics)
        new = [NewTopic(prefix + t, partitions, 1) for t in RAW_TOPICS if prefix + t not in existing]
        for future in admin.create_topics(new).values() if new else []:
            future.result(30)

    def _init_recovery(self, processes: int) -> None:
        """The features job's recovery partitions, made once (in a scratch folder, then moved into place)."""
        target = self.paths.data / "recovery"
        if (target / "part-0.sqlite3").exists():
            return
        scratch = self.paths.data / "recovery.new"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(scratch), str(max(1, processes))], check=True,
                       timeout=120, capture_output=True)
        target.mkdir(parents=True, exist_ok=True)
        for part in sorted(scratch.glob("part-*.sqlite3")):
            part.rename(target / part.name)
        shutil.rmtree(scratch, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- health
    def check(self, role: Role | str) -> tuple[bool, str]:
        """Whether ``role`` is healthy now, with one line saying why."""
        name = role if isinstance(role, str) else role.name
        state = self.state()
        try:
            info = rpc(self.paths).supervisor.getProcessInfo(name)
        except Exception as exc:
            return False, f"not supervised ({exc})"
        if info["statename"] == "EXITED" and info["exitstatus"] == 0:  # a role that may end (a finished replay)
            return True, f"finished (exit 0) {info.get('description', '')}".strip()
        if info["statename"] != "RUNNING":
            return False, f"{info['statename']}: {info.get('description', '')}".strip()
        if name in INFRA:
            drivers = default_drivers()
            ports = state.get("ports", {}).get(name, {})
            return (True, "answering") if drivers[name].answering(ports) else (False, "running, not answering yet")
        command = state.get("health", {}).get(name)
        if not command:
            return True, "running"
        spec = Spec.read(self.paths.spec(name))
        try:
            out = subprocess.run(native_argv(command), env=spec.env, cwd=spec.cwd, capture_output=True, text=True,
                                 timeout=30, check=False)
        except subprocess.TimeoutExpired:
            return False, "health check did not answer within 30 s"
        line = (out.stdout.strip() or out.stderr.strip()).splitlines()[-1:] or [f"exit {out.returncode}"]
        return out.returncode == 0, line[0][:200]

    def status(self) -> dict[str, Any]:
        """Per role: state, pid, uptime, restarts, last error, healthy (with why) and, for features, consumer lag."""
        state = self.state()
        pid = supervisord_pid(self.paths)
        out: dict[str, Any] = {"run_dir": str(self.paths.run_dir), "supervisord": pid, "roles": {},
                               "app_url": state.get("app_url"), "env": state.get("env", {})}
        if pid is None:
            return out
        infos = {i["name"]: i for i in rpc(self.paths).supervisor.getAllProcessInfo()}
        events = read_events(self.paths.events)
        counts = restarts(events)
        errors: dict[str, str] = {}
        for e in events:
            if e.get("last_error"):
                errors[e["role"]] = e["last_error"]
        names = [n for n in state.get("roles", []) if n in infos]
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            checks = dict(zip(names, pool.map(self.check, names), strict=True))
        lag = self._lag(state) if any(n.startswith("features") for n in names) else None
        for name in names:
            info = infos[name]
            running = info["statename"] == "RUNNING"
            out["roles"][name] = {
                "state": info["statename"], "pid": info["pid"] or None,
                "uptime_s": max(0, int(info["now"]) - int(info["start"])) if running else 0,
                "restarts": counts.get(name, 0), "last_error": errors.get(name, ""),
                "healthy": checks[name][0], "detail": checks[name][1],
                "lag": lag if name.startswith("features") else None,
            }
        return out

    @staticmethod
    def _lag(state: dict[str, Any]) -> int | None:
        from ccf.settings import KafkaSettings, Settings
        from ccf.stack.probe import consumer_lag

        bootstrap = state.get("env", {}).get("CCF_KAFKA__BOOTSTRAP_SERVERS", "")
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap))
        return consumer_lag(settings)

    # --------------------------------------------------------------------------------------------- down
    def down(self, timeout_s: float = 90.0) -> list[str]:
        """Stop every role, then supervisord, then anything of this stack still alive; return the roles stopped."""
        stopped: list[str] = []
        with self._lock():
            pid = supervisord_pid(self.paths)
            if pid is not None:
                proxy = rpc(self.paths).supervisor
                with contextlib.suppress(Exception):
                    stopped = [i["name"] for i in proxy.getAllProcessInfo() if i["statename"] == "RUNNING"]
                    proxy.stopAllProcesses(True)
                with contextlib.suppress(Exception):
                    proxy.shutdown()
                if not wait_for(lambda: not pid_alive(pid), timeout=timeout_s):  # its pid file goes first
                    logger.warning("supervisord (pid %d) did not exit; killing it", pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            left = stack_processes(self.paths.run_dir)
            strays = {p: _cmdline(p) for p in left}
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for p in left:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p, sig)
                if not wait_for(lambda: not stack_processes(self.paths.run_dir), timeout=15):
                    left = stack_processes(self.paths.run_dir)
                    continue
                break
            if strays:
                logger.warning("stopped %d stray process(es) of the stack: %s", len(strays),
                               "; ".join(f"{p} {c}" for p, c in strays.items()))
            self.paths.pidfile.unlink(missing_ok=True)
        return stopped

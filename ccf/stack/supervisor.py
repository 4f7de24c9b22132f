"""supervisord as the stack's process supervisor: its config, written from the roles, and its XML-RPC interface.

Why supervisord (PyPI ``supervisor``): it is maintained, pure Python, runs each program in its own process group
(``stopasgroup``/``killasgroup`` stop MLflow's and Bytewax's children with them), restarts a program that ends
(``autorestart``) with a growing delay for one that fails to start (``startsecs``/``startretries``), keeps rotated
logs, and tells an *event listener* of every state change, which is how a restart becomes a ``health`` record
(:mod:`ccf.stack.events`). Circus could do the same with ZeroMQ; supervisord needs nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ccf.stack.roles import Role

PRIORITY = {"kafka": 10, "questdb": 10, "mlflow": 10, "venue": 20, "ingest": 30, "trainer": 50, "predictor": 50,
            "app": 60}
"""Start order; supervisord stops in the reverse order (the app first, Kafka last)."""
FEATURES_PRIORITY = 40
MARKER = "CCF_STACK_DIR"
"""Set in the environment of every process of a stack: how ``down`` finds what is left of it."""


@dataclass(frozen=True)
class Paths:
    """The files of one stack under its run dir."""

    run_dir: Path

    @property
    def stack(self) -> Path:
        return self.run_dir / "stack"

    @property
    def conf(self) -> Path:
        return self.stack / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.stack / "supervisor.sock"

    @property
    def pidfile(self) -> Path:
        return self.stack / "supervisord.pid"

    @property
    def events(self) -> Path:
        return self.stack / "events.jsonl"

    @property
    def state(self) -> Path:
        return self.stack / "stack.json"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def data(self) -> Path:
        return self.run_dir / "data"

    def spec(self, role: str) -> Path:
        return self.stack / "roles" / f"{role}.json"

    def log(self, role: str) -> Path:
        return self.logs / f"{role}.log"


@dataclass(frozen=True)
class Spec:
    """What the launcher (:mod:`ccf.stack.launch`) execs for one role."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    events: str
    base_s: float
    max_s: float

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: Path) -> Spec:
        return cls(**json.loads(path.read_text()))


def native_argv(command: Sequence[str]) -> list[str]:
    """A role's command as this environment runs it: ``python`` and ``ccf`` are this interpreter's."""
    if not command:
        return []
    head, rest = command[0], list(command[1:])
    if head == "python":
        return [sys.executable, *rest]
    if head == "ccf":
        script = Path(sys.executable).with_name("ccf")
        return [str(script), *rest] if script.is_file() else [sys.executable, "-m", "ccf.cli", *rest]
    return list(command)


def _value(text: str) -> str:
    return text.replace("%", "%%")  # supervisord expands %(name)s in values


def _environment(env: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_value(v)}"' for k, v in env.items() if '"' not in v and "," not in v)


def render(paths: Paths, roles: Sequence[Role], env: Mapping[str, str],
           listener_env: Mapping[str, str] | None = None) -> str:
    """supervisord.conf for ``roles`` (each started by the launcher from its spec file, none automatically: ``up``
    starts them in order once what they need is healthy) and the event listener (with ``listener_env``: the
    services' addresses, for its health records on Kafka)."""
    py = _value(sys.executable)
    lines = [
        "[unix_http_server]", f"file={_value(str(paths.socket))}", "chmod=0700", "",
        "[supervisord]", f"logfile={_value(str(paths.stack / 'supervisord.log'))}", "logfile_maxbytes=10MB",
        f"pidfile={_value(str(paths.pidfile))}", f"childlogdir={_value(str(paths.logs))}",
        f"directory={_value(str(paths.run_dir))}", "identifier=ccf-stack", "nodaemon=false", "silent=true",
        "environment=" + _environment(env), "",
        "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "", "[supervisorctl]", f"serverurl=unix://{_value(str(paths.socket))}", "",
    ]
    for role in roles:
        r = role.restart
        autorestart = {"always": "true", "on-failure": "unexpected", "never": "false"}[r.policy]
        lines += [
            f"[program:{role.name}]",
            f"command={py} -m ccf.stack.launch {_value(str(paths.spec(role.name)))}",
            "autostart=false", f"autorestart={autorestart}", f"startsecs={r.start_s}", f"startretries={r.retries}",
            f"stopwaitsecs={r.stop_s}", "stopsignal=TERM", "stopasgroup=true", "killasgroup=true",
            f"priority={PRIORITY.get(role.name, FEATURES_PRIORITY)}", "redirect_stderr=true",
            f"stdout_logfile={_value(str(paths.log(role.name)))}", "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=3", "",
        ]
    lines += [
        "[eventlistener:ccf-events]", f"command={py} -m ccf.stack.events {_value(str(paths.run_dir))}",
        "events=PROCESS_STATE", "autostart=true", "autorestart=true", "buffer_size=100",
        "environment=" + _environment({**env, **(listener_env or {})}),
        f"stderr_logfile={_value(str(paths.log('events')))}", "stdout_logfile=NONE", "",
    ]
    return "\n".join(lines)


def rpc(paths: Paths) -> Any:
    """supervisord's XML-RPC proxy over the stack's unix socket (``.supervisor.*`` methods)."""
    from supervisor import childutils

    return childutils.getRPCInterface({"SUPERVISOR_SERVER_URL": f"unix://{paths.socket}"})


def supervisord_pid(paths: Paths) -> int | None:
    """The pid of this stack's supervisord when it runs (its pid file names a live process), else None."""
    try:
        pid = int(paths.pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def stack_processes(run_dir: Path, exclude: int | None = None) -> list[int]:
    """Pids of every process whose environment marks it as part of the stack of ``run_dir``."""
    marker = f"{MARKER}={run_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), exclude):
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found

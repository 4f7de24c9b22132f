"""``ccf stack``: the whole topology on this machine (see :mod:`ccf.stack.manager`)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="The whole stack (Kafka, QuestDB, MLflow, venue, ingest, features, trainer, predictor, app) as "
                       "native processes under supervisord.", no_args_is_help=True)

RUN_DIR = typer.Option(Path(".ccf/stack"), "--run-dir", help="Where the stack keeps config, data and logs.")


def _manager(run_dir: Path) -> Any:
    from ccf.stack.manager import StackManager

    return StackManager(run_dir)


def _setup() -> None:
    from ccf.logs import setup_logging

    setup_logging("INFO")


@app.command("up")
def up_cmd(
    run_dir: Path = RUN_DIR,
    replay: list[Path] = typer.Option(None, "--replay", help="Capture(s) the venue server replays (repeat); "
                                                             "none: the synthetic market."),
    speed: float = typer.Option(1.0, "--speed", min=0.0, help="Replay pace: 1 real time, N = N times, 0 flat out."),
    processes: int = typer.Option(1, "--processes", min=1, help="Processes of the features job (a Bytewax cluster)."),
    live: bool = typer.Option(False, "--live", help="The venue's public endpoints, no local venue server."),
    symbols: str = typer.Option("", "--symbols", help="Comma-separated, e.g. BTC-USDT (default: the capture's)."),
    trainer_every: str = typer.Option("1h", "--trainer-every", help="Period of the TFT retrain."),
    keep_times: bool = typer.Option(False, "--keep-times", help="The feed's own times (default: moved so that its "
                                                                "first event is now)."),
    app_port: int = typer.Option(0, "--app-port", min=0, max=65535, help="Panel app port (0: a free one)."),
    timeout: float = typer.Option(120.0, "--timeout", min=1.0, help="Seconds to wait for every role to be healthy."),
) -> None:
    """Start every role, wait until all are healthy, print `export CCF_...` lines (like `ccf services up`)."""
    from ccf.stack.manager import StackOptions

    _setup()
    options = StackOptions(replay=tuple(replay or ()), speed=speed, processes=processes, live=live,
                           symbols=tuple(s.strip() for s in symbols.split(",") if s.strip()),
                           trainer_every=trainer_every, shift_to_now=not keep_times, app_port=app_port, timeout_s=timeout)
    t0 = time.monotonic()
    status = _manager(run_dir).up(options)
    for key, value in status["env"].items():
        typer.echo(f"export {key}={shlex.quote(str(value))}")
    typer.echo(f"# stack healthy in {time.monotonic() - t0:.0f} s; app {status['app_url']}; "
               f"`ccf stack status --run-dir {run_dir}`", err=True)


@app.command("status")
def status_cmd(run_dir: Path = RUN_DIR, as_json: bool = typer.Option(False, "--json", help="Machine-readable.")) -> None:
    """Per role: state, pid, restarts, last error, health and lag. Exit 1 when a role is not healthy."""
    status = _manager(run_dir).status()
    if as_json:
        typer.echo(json.dumps(status, indent=1))
    elif status["supervisord"] is None:
        typer.echo(f"no stack runs in {run_dir}")
    else:
        typer.echo(f"{'role':<12} {'state':<9} {'pid':>7} {'up s':>6} {'restarts':>8} {'lag':>7}  health")
        for name, r in status["roles"].items():
            lag = "" if r["lag"] is None else str(r["lag"])
            mark = "ok" if r["healthy"] else "NOT OK"
            typer.echo(f"{name:<12} {r['state']:<9} {r['pid'] or '':>7} {r['uptime_s']:>6} {r['restarts']:>8} "
                       f"{lag:>7}  {mark}: {r['detail']}")
            if r["last_error"]:
                typer.echo(f"{'':<12} last error: {r['last_error']}")
    roles = status["roles"].values()
    if status["supervisord"] is None or not all(r["healthy"] for r in roles):
        raise typer.Exit(1)


@app.command("logs")
def logs_cmd(role: str = typer.Argument(..., help="A role (see `ccf stack status`), or `events`."),
             run_dir: Path = RUN_DIR, lines: int = typer.Option(50, "--lines", "-n", min=0),
             follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing what it writes.")) -> None:
    """The last lines of a role's log (stdout and stderr)."""
    from ccf.errors import ConfigError
    from ccf.services.process import log_tail
    from ccf.stack.supervisor import Paths

    paths = Paths(run_dir.expanduser().resolve())
    path = paths.events if role == "events" else paths.log(role)
    if not path.exists():
        known = sorted(p.stem for p in paths.logs.glob("*.log"))
        raise ConfigError(f"no log for role {role!r} in {paths.logs} (roles: {', '.join(known) or 'none yet'})")
    typer.echo(log_tail(path, lines))
    if follow:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            while True:
                chunk = fh.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)


@app.command("down")
def down_cmd(run_dir: Path = RUN_DIR) -> None:
    """Stop every role and supervisord; nothing of the stack is left running (data stays in the run dir)."""
    _setup()
    stopped = _manager(run_dir).down()
    typer.echo(f"stopped {', '.join(stopped) if stopped else 'nothing (no stack was running)'}", err=True)


@app.command("probe")
def probe_cmd(role: str = typer.Argument(..., help="venue, features or app.")) -> None:
    """Exit 0 when the role (configured by this process's CCF_* settings) is healthy, 1 otherwise; one line."""
    from ccf.errors import ConfigError
    from ccf.settings import load_settings
    from ccf.stack.probe import PROBES

    if role not in PROBES:
        raise ConfigError(f"unknown probe {role!r}; choose from {', '.join(PROBES)}")
    ok, line = PROBES[role](load_settings())
    typer.echo(("healthy: " if ok else "unhealthy: ") + line)
    raise typer.Exit(0 if ok else 1)

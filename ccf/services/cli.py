"""``ccf services up|down|status``: a local Kafka, QuestDB and MLflow for development and tests.

``eval "$(ccf services up)"`` starts them (or reuses running ones) and exports the ``CCF_*`` settings that point
CCF at them; progress goes to stderr. Everything heavy is imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ccf.services.manager import ServiceManager, ServiceView

app = typer.Typer(
    help="Local Kafka 4 (KRaft), QuestDB 9 and MLflow servers for development and tests.",
    no_args_is_help=True,
)

RUN_DIR_HELP = "Where services keep config, data, logs and state (default: $CCF_RUN_DIR/services, i.e. .ccf/services)."
ONLY_HELP = "Comma-separated subset of kafka,questdb,mlflow (default: all)."
RunDirOpt = Annotated[Path | None, typer.Option("--run-dir", help=RUN_DIR_HELP)]
OnlyOpt = Annotated[str | None, typer.Option("--only", help=ONLY_HELP)]


def _manager(run_dir: Path | None) -> ServiceManager:
    from ccf.logs import setup_logging
    from ccf.services.manager import ServiceManager
    from ccf.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level)
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per readiness probe is noise here
    return ServiceManager(run_dir if run_dir is not None else settings.run_dir / "services")


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@app.command("up")
def up_cmd(
    run_dir: RunDirOpt = None,
    only: OnlyOpt = None,
) -> None:
    """Start (or reuse) the services, wait until each answers, print `export CCF_...=...` lines."""
    from ccf.errors import CCFError
    from ccf.services.manager import parse_only
    from ccf.services.state import export_lines

    try:
        payload = _manager(run_dir).up(parse_only(only))
    except CCFError as exc:
        raise _fail(exc) from exc
    for line in export_lines(payload):
        typer.echo(line)


@app.command("down")
def down_cmd(
    run_dir: RunDirOpt = None,
    only: OnlyOpt = None,
) -> None:
    """Stop the services this run dir started (a no-op when none run). Data stays in the run dir."""
    from ccf.errors import CCFError
    from ccf.services.manager import parse_only

    try:
        stopped = _manager(run_dir).down(parse_only(only))
    except CCFError as exc:
        raise _fail(exc) from exc
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running", err=True)


@app.command("status")
def status_cmd(
    run_dir: RunDirOpt = None,
    only: OnlyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the endpoints of running services as JSON.")] = False,
) -> None:
    """Show which services run and answer; exit 1 when none does."""
    from ccf.errors import CCFError
    from ccf.services.manager import parse_only
    from ccf.services.state import status_payload

    try:
        views = _manager(run_dir).inspect(parse_only(only))
    except CCFError as exc:
        raise _fail(exc) from exc
    payload = status_payload({v.name: v.record for v in views if v.answering and v.record is not None})
    typer.echo(json.dumps(payload) if as_json else render_table(views))
    if not payload:
        raise typer.Exit(code=1)


def render_table(views: list[ServiceView]) -> str:
    """A fixed-width table: service, state, pid, version, endpoint."""
    from ccf.services.state import endpoint

    rows = [("SERVICE", "STATE", "PID", "VERSION", "ENDPOINT")]
    for view in views:
        rec = view.record
        if rec is None:
            rows.append((view.name, "stopped", "-", "-", "-"))
            continue
        info: dict[str, Any] = endpoint(view.name, rec)
        where = " ".join(
            f"{k}={v}" for k, v in info.items() if k in ("bootstrap_servers", "http_url", "pg_port", "tracking_uri")
        )
        state = "running" if view.answering else "not answering"
        rows.append((view.name, state, str(rec.pid), rec.version or "-", where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

"""The ``ccf`` command. Each subcommand imports what it needs when it runs, so ``ccf --help`` is instant."""

from __future__ import annotations

import typer

from ccf.services.cli import app as services_app

app = typer.Typer(
    name="ccf",
    help=(
        "CCF: real-time crypto-currency forecasting.\n\n"
        "Start here: `ccf services up` starts a local Kafka, QuestDB and MLflow for development and tests; "
        "`python -m bytewax.run flows.features` (or `make run`) runs the main job. Settings come from CCF_* "
        "environment variables (see `ccf config`)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(services_app, name="services")


@app.command("config")
def config_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON (secrets hidden)."),
) -> None:
    """Show the settings CCF would run with, read from CCF_* variables (secrets hidden)."""
    from ccf.settings import load_settings

    settings = load_settings()
    if as_json:
        typer.echo(settings.model_dump_json(indent=2))
    else:
        typer.echo(repr(settings))


def main() -> None:
    """Console-script entry point."""
    app()

"""The ``ccf`` command. Each subcommand imports what it needs when it runs, so ``ccf --help`` is instant."""

from __future__ import annotations

from pathlib import Path

import typer

from ccf.entry import fail, start
from ccf.errors import CCFError
from ccf.services.cli import app as services_app
from ccf.stack.cli import app as stack_app
from ccf.venue_server.cli import app as venue_server_app

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
app.add_typer(stack_app, name="stack")
app.add_typer(venue_server_app, name="venue-server")

_debug = False  # set by --debug (the callback below) before a subcommand runs


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an error, not only its one line."),
) -> None:
    """Options of every subcommand. An error CCF raises on purpose ends with one line on stderr and exit code 2."""
    global _debug
    _debug = debug


@app.command("backtest")
def backtest_cmd(
    files: list[Path] = typer.Argument(None, exists=True, dir_okay=False,
                                       help="Capture files; paired ws/http files go together."),
    inputs: list[Path] = typer.Option(None, "--input", "-i", exists=True, dir_okay=False,
                                      help="Capture files, as the arguments (repeat the option)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for features/predictions/scores parquet + summary."),
    fmt: str = typer.Option("auto", "--format", help="Input format, or auto to detect it per file."),
    models: str = typer.Option("naive,ewma,river_lr,river_ts,blend", "--models",
                               help="Comma-separated models (naive, ewma, river_lr, river_ts, blend, tft), or 'all'."),
    train_inputs: list[Path] = typer.Option(
        [], "--train-input", exists=True, dir_okay=False,
        help="Walk-forward: train the TFT on these (River models warm up on them), forecast --input step by step.",
    ),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Walk-forward: cap on TFT training time."),
    encoder_length: int = typer.Option(60, "--encoder-length", help="Walk-forward: windows the TFT encoder sees."),
    vol_window: int = typer.Option(0, "--vol-window", help="Walk-forward: volatility-scale the TFT's targets over "
                                                           "N windows (0: per symbol only)."),
    tft_inputs: str = typer.Option("all", "--tft-inputs", help="Walk-forward: the TFT's market inputs: all, lr (the "
                                                               "River linear model's) or a comma-separated list."),
) -> None:
    """Run the features flow over capture files as fast as possible and score every model.

    With --train-input, a walk-forward: the TFT trains on those files, then every model forecasts --input and is
    scored by the same scorer; DIR/report.html shows forecasts with quantile bands, skill per horizon, calibration.
    """
    from ccf.backtest import run_backtest
    from ccf.capture.readers import Format
    from ccf.forecast.baselines import MODELS
    inputs = [*(files or []), *(inputs or [])]
    if not inputs:
        raise typer.BadParameter("give the capture files: ccf backtest FILE... -o DIR", param_hint="FILE")
    formats = ["auto", *(f.value for f in Format)]
    if fmt not in formats:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(formats)}", param_hint="--format")
    settings = start(debug=_debug, stop_on_signals=True)
    every = [*MODELS, "tft"] if train_inputs else list(MODELS)
    chosen = every if models.strip() == "all" else [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in (*MODELS, "tft")]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown model(s) {unknown}; choose from {', '.join([*MODELS, 'tft'])} or all",
                                 param_hint="--models")
    if train_inputs:
        from dataclasses import replace

        from models.cli import parse_inputs
        from models.train import LR_INPUTS, TrainConfig
        from models.walkforward import run_walkforward

        config = replace(TrainConfig(checkpoint_dir=out / "checkpoints"), max_minutes=max_minutes,
                         encoder_length=encoder_length, vol_window=vol_window,
                         inputs=parse_inputs(tft_inputs, LR_INPUTS))
        result = run_walkforward(train_inputs, inputs, out, settings, models=[m for m in chosen if m != "tft"],
                                 config=config)
        typer.echo(f"walk-forward: {result['anchors']} anchors, {result['epochs']} epochs, fit "
                   f"{result['fit_seconds']} s -> {result['report']}")
        for row in sorted(result["scores"], key=lambda r: (r["horizon"], r["model"])):
            skill = "n/a" if row["skill"] is None else f"{row['skill']:+.4f}"
            pinball = "n/a" if row["pinball"] is None else f"{row['pinball'] * 1e4:.4f}"
            coverage = "n/a" if row["coverage"] is None else f"{row['coverage']:.3f}"
            typer.echo(f"  h={row['horizon']:<3} {row['model']:<9} n={row['n']:<6} skill={skill} "
                       f"pinball={pinball} bps coverage={coverage}")
        return
    if "tft" in chosen:
        raise typer.BadParameter("the tft model needs --train-input (a walk-forward)", param_hint="--models")
    summary = run_backtest(inputs, out, settings, models=chosen, fmt=fmt)
    typer.echo(
        f"{summary['records']} records in {summary['seconds']} s ({summary['records_per_s']} msgs/s, "
        f"{summary['x_real_time']}x real time): {summary['feature_rows']} windows, {summary['predictions']} "
        f"predictions for {', '.join(summary['symbols'])}; skipped "
        f"{', '.join(f'{v} {k}' for k, v in summary['skipped'].items()) or 'nothing'} -> {summary['report']}"
    )
    for s in summary["scores"]:
        skill = "n/a" if s["skill"] is None else f"{s['skill']:+.4f}"
        typer.echo(f"  {s['symbol']:<14} {s['model']:<9} h={s['horizon_steps']:<3} n={s['n']:<6} skill={skill}")


@app.command("book-replay")
def book_replay_cmd(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Capture files (ws and http together)."),
    out: Path = typer.Option(..., "--out", "-o", help="OUT.csv or OUT.parquet"),
) -> None:
    """Replay captures through the book code: one row per applied update (best bid/ask, levels, epoch, validity)."""
    from ccf.capture.replay import write_book_replay

    n = write_book_replay(files, out)
    typer.echo(f"{n} book updates -> {out}")


@app.command("config")
def config_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON (secrets hidden)."),
    check: bool = typer.Option(False, "--check", help="Only validate: one line, exit 0 when valid, 2 when not."),
    doc: bool = typer.Option(False, "--doc", help="Print the reference of every setting (docs/configuration.md)."),
) -> None:
    """Show the settings CCF would run with, read from CCF_* variables (secrets hidden), by section."""
    from ccf.config_doc import listing, markdown

    if doc:
        typer.echo(markdown(), nl=False)
        return
    settings = start(debug=_debug)
    if check:
        typer.echo("settings are valid")
    elif as_json:
        typer.echo(settings.model_dump_json(indent=2))
    else:
        typer.echo(listing(settings))


@app.command("schema")
def schema_cmd(
    out: Path = typer.Option(Path("docs/schemas"), "--out", "-o", file_okay=False,
                             help="Folder for one <topic>.schema.json per Kafka topic."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 when a file is missing or stale."),
) -> None:
    """Write the JSON Schema of every Kafka topic CCF writes (the consumer contract: docs/consumers.md)."""
    from ccf.contract import stale_files, write_schemas

    if check:
        stale = stale_files(out)
        for name in stale:
            typer.echo(f"stale: {out / name} (regenerate: ccf schema --out {out})", err=True)
        raise typer.Exit(1 if stale else 0)
    for path in write_schemas(out):
        typer.echo(path)


@app.command("record")
def record_cmd(
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Directory for the recording files."),
    venue: str | None = typer.Option(None, "--venue", help="binance, binance_futures, ... (default CCF_VENUES__SOURCE)."),
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated, e.g. BTC-USDT,ETH-USDT."),
    channels: str | None = typer.Option(None, "--channels", help="Comma-separated, e.g. depth,trade,book_ticker."),
    ws_url: str | None = typer.Option(None, "--ws-url", help="Websocket server (e.g. the local venue server)."),
    rest_url: str | None = typer.Option(None, "--rest-url", help="REST server for the book snapshots."),
    duration: float | None = typer.Option(None, "--duration", help="Seconds to record (default CCF_STOP_AFTER)."),
    max_mb: float = typer.Option(256.0, "--max-mb", help="Rotate after this many MB of JSON."),
    max_minutes: float = typer.Option(60.0, "--max-minutes", help="Rotate files this old."),
    compression: str = typer.Option("zstd", "--compression", help="zstd or gzip."),
) -> None:
    """Record raw websocket frames (and per-session REST snapshots) with receipt times, as rotating JSONL files."""
    from ccf.capture.record import RecordConfig, record_venue
    settings = start(debug=_debug)
    if compression not in ("zstd", "gzip"):
        raise typer.BadParameter(f"--compression zstd|gzip, got {compression!r}")
    config = RecordConfig(out, "zstd" if compression == "zstd" else "gzip", round(max_mb * 2**20), max_minutes * 60)
    from ccf.progress import progress

    seconds = duration if duration is not None else settings.stop_after
    with progress("record", unit="frames") as bar:
        summary = record_venue(
            venue or settings.venues.source,
            [s.strip() for s in symbols.split(",") if s.strip()] if symbols else settings.venues.symbols,
            config,
            channels=[c.strip() for c in channels.split(",") if c.strip()] if channels else None,
            ws_url=ws_url,
            rest_url=rest_url,
            duration_s=seconds,
            bar=bar,
        )
    typer.echo(f"{summary.frames} frames, {summary.rest} REST answers in {len(summary.files)} file(s) -> {out}")


# The TFT sidecar's commands live beside the models (models/cli.py imports only typer; torch and MLflow load when
# a command runs).
from models.cli import predict_cmd, train_cmd, trainer_health_cmd  # noqa: E402  # registered after the commands above

app.command("train")(train_cmd)
app.command("trainer-health")(trainer_health_cmd)
app.command("predict")(predict_cmd)


@app.command("app")
def app_cmd(
    host: str = typer.Option(None, "--host", help="Address to listen on (default: CCF_APP__HOST)."),
    port: int = typer.Option(None, "--port", min=0, max=65535, help="Port to listen on (default: CCF_APP__PORT)."),
    show: bool = typer.Option(False, "--show", help="Open it in a browser."),
) -> None:
    """Serve the Panel app (live prices, forecasts, leaderboard, book, health, news) on the configured store."""
    import importlib

    settings = start(debug=_debug, secrets=("questdb",))  # the app reads the store: QuestDB's password must be real
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update={"app": settings.app.model_copy(update=updates)})
    importlib.import_module("dashboards.app").serve(settings, show=show)  # panel loads only here


@app.command("demo")
def demo_cmd(
    speed: float = typer.Option(1.0, "--speed", min=0.0, help="Pace of the synthetic venue: 1 real time, N = N times."),
    tft_after: int = typer.Option(600, "--tft-after", min=0, help="Windows per symbol before the TFT trains (0: no TFT)."),
    tft_epochs: int = typer.Option(3, "--tft-epochs", min=1, help="Training epochs of the TFT."),
    duration: float = typer.Option(None, "--duration", min=0.0, help="Stop writing after this many seconds of event time."),
    store: Path = typer.Option(None, "--store", help="Store file (default: <run dir>/demo/store.duckdb)."),
    keep: bool = typer.Option(False, "--keep", help="Keep an earlier demo's store (default: start afresh)."),
    host: str = typer.Option(None, "--host", help="App address (default: CCF_APP__HOST)."),
    port: int = typer.Option(None, "--port", min=0, max=65535, help="App port (default: CCF_APP__PORT)."),
    show: bool = typer.Option(False, "--show", help="Open the app in a browser."),
) -> None:
    """The whole loop on embedded defaults: synthetic venue -> features -> baselines -> TFT -> forecasts -> scores,
    served by the Panel app."""
    from ccf.demo import DemoOptions, run_demo
    settings = start(debug=_debug)
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update={"app": settings.app.model_copy(update=updates)})
    options = DemoOptions(speed=speed, duration_s=duration, tft_after=tft_after, tft_epochs=tft_epochs,
                          fresh=not keep, show=show)
    run_demo(settings, options, store)


def main() -> None:
    """Console-script entry point: a :class:`CCFError` or a bad option ends in one line and exit code 2 (see
    :func:`ccf.entry.fail`)."""
    import sys

    try:
        code = app(standalone_mode=False)
    except CCFError as exc:
        fail(exc, debug=_debug)
    except typer.Abort:
        print("ccf: aborted", file=sys.stderr)
        raise SystemExit(130) from None
    except typer.TyperException as exc:  # typer's click exceptions: a bad option or argument, a missing file
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if text.strip():  # `ccf` alone printed its help: nothing to add
            print(f"ccf: error: {' '.join(text.split())}{hint}", file=sys.stderr, flush=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

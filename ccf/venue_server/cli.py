"""``ccf venue-server serve``: a local Binance-protocol server for development, demos and chaos tests.

Defaults come from the ``CCF_VENUES__*`` settings (symbols, seed, replay files, speed); options override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="A local venue server speaking Binance's websocket and REST protocol.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """A local venue server speaking Binance's websocket and REST protocol."""


@app.command("serve")
def serve_cmd(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Capture files to replay, in order (implies --mode replay); as --file."),
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="synthetic (generated market) or replay (capture files).")] = (
        "synthetic"
    ),
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", help="hftbacktest capture (.gz), repeatable, played in order (replay mode)."),
    ] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated, e.g. BTC-USDT,ETH-USDT.")] = None,
    speed: Annotated[float | None, typer.Option("--speed", help="1 = real time, N = N× faster, 0 = flat out.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Synthetic market seed.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Synthetic: strength of the imbalance signal, 0..1.")] = 0.8,
    market: Annotated[str, typer.Option("--market", help="spot or futures (message format).")] = "spot",
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="0 picks a free port.")] = 9443,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="Fault for every connection: kind, kind@after or kind:arg@after, e.g. drop_diff@100, stall:5@50.",
        ),
    ] = None,
    max_conn_age: Annotated[
        float | None, typer.Option("--max-conn-age", help="Close connections this many seconds old (Binance: 86400).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Synthetic: end after this much event time (s).")
    ] = None,
    shift_to_now: Annotated[
        bool,
        typer.Option("--shift-to-now", help="Move every time field by one offset: the first event time to now."),
    ] = False,
    slow_client_grace: Annotated[
        float, typer.Option("--slow-client-grace", help="Speed 0: seconds a full client queue may hold the feed.")
    ] = 5.0,
) -> None:
    """Serve /stream, /ws, /api/v3/depth, /fapi/v1/depth and /control/{faults,stats} until Ctrl-C."""
    from ccf.logs import setup_logging
    from ccf.settings import load_settings
    from ccf.venue_server.faults import parse_faults
    from ccf.venue_server.runner import serve_forever
    from ccf.venue_server.server import ServerConfig

    settings = load_settings()
    setup_logging(settings.log_level)
    venues = settings.venues
    if mode not in ("synthetic", "replay") or market not in ("spot", "futures"):
        raise typer.BadParameter(f"--mode synthetic|replay and --market spot|futures, got {mode!r}, {market!r}")
    replay = tuple([*(files or ()), *(file or ())] or venues.replay_files)
    if files and mode == "synthetic":
        mode = "replay"  # files given as arguments: what else would they be for
    missing = [str(f) for f in replay if not Path(f).is_file()]
    if missing:
        raise typer.BadParameter(f"no such file: {', '.join(missing)}")
    try:
        config = ServerConfig(
            mode="replay" if mode == "replay" else "synthetic",
            symbols=tuple(s.strip() for s in symbols.split(",") if s.strip()) if symbols else tuple(venues.symbols),
            seed=venues.seed if seed is None else seed,
            alpha=alpha,
            speed=venues.speed if speed is None else speed,
            files=replay,
            market="futures" if market == "futures" else "spot",
            faults=tuple(parse_faults(fault or [])),
            max_conn_age_s=max_conn_age,
            duration_s=duration if duration is not None else settings.stop_after,
            host=host,
            port=port,
            shift_to_now=shift_to_now,
            slow_client_grace_s=slow_client_grace,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    serve_forever(config)

"""``ccf train`` and ``ccf predict`` (registered on the ``ccf`` app by ``ccf/cli.py``).

Only typer is imported here; torch, pytorch-forecasting and MLflow are imported when a command runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import pandas as pd

    from ccf.settings import Settings


def _ns(text: str | None) -> int | None:
    if not text:
        return None
    t = datetime.fromisoformat(text)
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1e9)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def train_cmd(
    inputs: list[Path] = typer.Option(None, "--input", "-i", exists=True, dir_okay=False,
                                      help="Capture or Binance kline files (repeat); none: read the store."),
    start: str = typer.Option(None, "--start", help="First window (ISO time, UTC unless it says)."),
    end: str = typer.Option(None, "--end", help="End of the range (exclusive)."),
    symbols: str = typer.Option("", "--symbols", help="Comma-separated venue:SYMBOL; empty: all."),
    every: str = typer.Option(None, "--every", help="Retrain forever on a rolling window, e.g. 1h (store only)."),
    span: str = typer.Option("7d", "--span", help="Length of the rolling window with --every."),
    encoder_length: int = typer.Option(60, "--encoder-length", help="Windows the encoder sees."),
    hidden_size: int = typer.Option(16, "--hidden-size"),
    heads: int = typer.Option(2, "--heads", help="Attention heads."),
    batch_size: int = typer.Option(128, "--batch-size"),
    max_epochs: int = typer.Option(20, "--max-epochs"),
    patience: int = typer.Option(3, "--patience", help="Early stopping: epochs without a better val loss."),
    max_minutes: float = typer.Option(None, "--max-minutes", help="Stop training after this long."),
    limit_train_batches: int = typer.Option(None, "--limit-train-batches", help="Batches per epoch (default all)."),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="Last share of time kept for validation."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu, cuda, mps."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Lightning's progress bar."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (1 is fastest for small models)."),
    checkpoint_dir: Path = typer.Option(Path(".ccf/tft-checkpoints"), "--checkpoint-dir"),
    models: str = typer.Option("", "--models", help="Baselines scored beside the TFT (default: the settings')."),
) -> None:
    """Train a TFT on feature rows, log it to MLflow, register it, and move `champion` if it wins the gate."""
    from ccf.logs import setup_logging
    from ccf.settings import load_settings
    from models.network import NetConfig
    from models.registry import configure_auth
    from models.train import TrainConfig, parse_duration, run_every, train

    settings = load_settings()
    setup_logging(settings.log_level)
    configure_auth(settings)
    _threads(threads)
    cfg = TrainConfig(
        encoder_length=encoder_length, net=NetConfig(hidden_size=hidden_size, attention_heads=heads),
        batch_size=batch_size, max_epochs=max_epochs, patience=patience, max_minutes=max_minutes,
        limit_train_batches=limit_train_batches, val_fraction=val_fraction, accelerator=accelerator,
        progress=progress, checkpoint_dir=checkpoint_dir,
    )
    wanted = [s.strip() for s in symbols.split(",") if s.strip()] or None
    chosen = [m.strip() for m in models.split(",") if m.strip()] or None
    if every:
        if inputs:
            raise typer.BadParameter("--every retrains from the store; drop --input")
        run_every(settings, cfg, parse_duration(every), parse_duration(span), wanted, chosen)
        return
    frame = _frame(settings, inputs, _ns(start), _ns(end), wanted)
    result = train(frame, settings, cfg, chosen)
    typer.echo(f"{settings.mlflow.model_name} version {result.version} (run {result.run_id}): "
               f"{'promoted to champion' if result.decision.promote else 'not promoted'}: {result.decision.reason}")
    for model, hs in sorted(result.scores.items()):
        skills = "  ".join(f"h={h}: {m.skill:+.4f}" if m.skill is not None else f"h={h}: n/a" for h, m in hs.items())
        typer.echo(f"  {model:<10} {skills}")


def _frame(settings: Settings, inputs: list[Path] | None, start: int | None, end: int | None,
           symbols: list[str] | None) -> pd.DataFrame:
    from models.dataset import rows_to_frame
    from models.sources import frame_from_store, rows_from_files

    if not inputs:
        return frame_from_store(settings, start, end, symbols)
    rows = [r for r in rows_from_files(inputs, settings)
            if (start is None or r.window_start >= start) and (end is None or r.window_start < end)
            and (not symbols or f"{r.venue}:{r.symbol}" in symbols)]
    return rows_to_frame(rows)


def predict_cmd(
    alias: str = typer.Option("champion", "--alias", help="Registry alias to serve."),
    poll_s: float = typer.Option(30.0, "--poll-s", help="Seconds between registry checks (hot reload)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Read the features topic from the start."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    features_topic: str = typer.Option(None, "--features-topic", help="Default: <prefix>features."),
    predictions_topic: str = typer.Option(None, "--predictions-topic", help="Default: <prefix>predictions."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads."),
) -> None:
    """Serve the registry's champion TFT: feature rows from Kafka in, predictions to Kafka out."""
    from ccf.logs import setup_logging
    from ccf.settings import load_settings
    from models.predict import run_predictor
    from models.registry import configure_auth

    settings = load_settings()
    setup_logging(settings.log_level)
    configure_auth(settings)
    _threads(threads)
    if not settings.kafka.enabled:
        raise typer.BadParameter("ccf predict reads Kafka: set CCF_KAFKA__BOOTSTRAP_SERVERS")
    run_predictor(settings, alias=alias, poll_s=poll_s, from_beginning=from_beginning, device=device,
                  features_topic=features_topic, predictions_topic=predictions_topic)

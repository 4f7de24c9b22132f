"""``ccf train``, ``ccf trainer-health`` and ``ccf predict`` (registered on the ``ccf`` app by ``ccf/cli.py``).

Only typer is imported here; torch, pytorch-forecasting and MLflow are imported when a command runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    vol_window: int = typer.Option(0, "--vol-window", help="Scale targets by the RMS of the last N one-window "
                                                           "returns too (0: per symbol only); see models/targets.py."),
    tft_inputs: str = typer.Option("all", "--inputs", help="Market inputs: all, lr (the River linear model's) or "
                                                           "a comma-separated list."),
    hidden_size: int = typer.Option(16, "--hidden-size"),
    heads: int = typer.Option(2, "--heads", help="Attention heads."),
    batch_size: int = typer.Option(128, "--batch-size"),
    max_epochs: int = typer.Option(20, "--max-epochs"),
    patience: int = typer.Option(3, "--patience", help="Early stopping: epochs without a better val loss."),
    max_minutes: float = typer.Option(None, "--max-minutes", help="Stop training after this long."),
    limit_train_batches: int = typer.Option(None, "--limit-train-batches", help="Batches per epoch (default all)."),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="Last share of time kept for validation."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu, cuda, mps."),
    progress: bool = typer.Option(None, "--progress/--no-progress",
                                  help="Lightning's progress bar (default: when a terminal is attached)."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (1 is fastest for small models)."),
    checkpoint_dir: Path = typer.Option(None, "--checkpoint-dir",
                                        help="Default: <CCF_RUN_DIR>/tft-checkpoints (the one writable directory)."),
    models: str = typer.Option("", "--models", help="Baselines scored beside the TFT (default: the settings')."),
) -> None:
    """Train a TFT on feature rows, log it to MLflow, register it, and move `champion` if it wins the gate."""
    from ccf.logs import setup_logging
    from ccf.progress import interactive
    from ccf.settings import load_settings, refuse_placeholder_secrets
    from models.network import NetConfig
    from models.registry import configure_auth
    from models.retrain import parse_duration, run_every
    from models.train import LR_INPUTS, TrainConfig, train

    settings = load_settings()
    refuse_placeholder_secrets(settings, ("mlflow",) if inputs else ("mlflow", "questdb"))  # files: no store read
    setup_logging(settings.log_level)
    configure_auth(settings)
    _threads(threads)
    cfg = TrainConfig(
        encoder_length=encoder_length, vol_window=vol_window, inputs=parse_inputs(tft_inputs, LR_INPUTS),
        net=NetConfig(hidden_size=hidden_size, attention_heads=heads),
        batch_size=batch_size, max_epochs=max_epochs, patience=patience, max_minutes=max_minutes,
        limit_train_batches=limit_train_batches, val_fraction=val_fraction, accelerator=accelerator,
        progress=interactive() if progress is None else progress, checkpoint_dir=checkpoint_dir or settings.checkpoint_dir,
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


def parse_inputs(text: str, lr: tuple[str, ...]) -> tuple[str, ...]:
    """``--inputs``: all (empty: every input), lr (the River linear model's) or a comma-separated list."""
    if text == "all":
        return ()
    return lr if text == "lr" else tuple(s.strip() for s in text.split(",") if s.strip())


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


def trainer_health(status: Mapping[str, Any] | None, now: datetime, max_failures: int, grace: timedelta,
                   every: timedelta | None = None) -> tuple[bool, str]:
    """Is the periodic retrain healthy, by the status file :func:`models.retrain.run_every` writes? And a line saying why.

    Healthy: fewer than ``max_failures`` failed runs in a row, and the last run ended (or, before any, the trainer
    started) at most two periods (``every``, default the trainer's own) plus ``grace`` ago.

    >>> t0 = datetime(2025, 11, 8, 13, 0, tzinfo=UTC)
    >>> st = {"started": t0.isoformat(), "last_run": None, "consecutive_failures": 0, "every_s": 3600}
    >>> trainer_health(st, t0 + timedelta(minutes=5), 3, timedelta(minutes=10))[0]
    True
    >>> trainer_health(st, t0 + timedelta(hours=3), 3, timedelta(minutes=10))
    (False, 'unhealthy: no retrain has ended in 3:00:00 since the trainer started (limit 2 x 1:00:00 + 0:10:00)')
    """
    if status is None:
        return False, "unhealthy: no trainer status (has `ccf train --every` started?)"
    try:
        failures = int(status.get("consecutive_failures") or 0)
        period = every or timedelta(seconds=float(status["every_s"]))
        last = status.get("last_run")
        since = datetime.fromisoformat(last or status["started"])
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"unhealthy: unreadable trainer status ({type(exc).__name__}: {exc})"
    age = timedelta(seconds=round((now - since).total_seconds()))
    if failures >= max_failures:
        return False, (f"unhealthy: {failures} failed retrains in a row (max {max_failures}), last: "
                       f"{status.get('last_error', '')}")
    limit = f"limit 2 x {period} + {grace}"
    if age > 2 * period + grace:
        what = f"last retrain ended {age} ago" if last else f"no retrain has ended in {age} since the trainer started"
        return False, f"unhealthy: {what} ({limit})"
    if not last:
        return True, f"healthy: started {age} ago, no retrain ended yet ({limit})"
    return True, (f"healthy: last retrain {'ok' if status.get('ok') else 'failed'} {age} ago, {failures} failed in a "
                  f"row (max {max_failures}), next due {status.get('next_due')}")


def trainer_health_cmd(
    every: str = typer.Option(None, "--every", help="The trainer's period, e.g. 1h (default: its status file's)."),
    grace: str = typer.Option(None, "--grace", help="Slack beyond two periods before a late retrain is unhealthy "
                                                    "(default 10m)."),
) -> None:
    """Exit 0 when `ccf train --every` is healthy, 1 otherwise, with one line (the trainer container's healthcheck)."""
    import json

    from ccf.errors import CCFError
    from ccf.settings import load_settings

    try:
        settings = load_settings()
        period = slack = None
        if every or grace:  # models.retrain imports no pandas or torch; still only when asked
            from models.retrain import parse_duration

            period = parse_duration(every) if every else None
            slack = parse_duration(grace) if grace else None
    except (CCFError, ValueError) as exc:  # exit 1, not 2: Docker reserves 2 for healthchecks
        typer.echo(f"unhealthy: {' '.join(str(exc).split())}")
        raise typer.Exit(1) from exc
    path = settings.trainer_status_path
    try:  # as models.retrain.read_status
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        status = None
    ok, line = trainer_health(status if isinstance(status, dict) else None, datetime.now(UTC),
                              settings.trainer.max_failures, slack or timedelta(minutes=10), period)
    typer.echo(f"{line} [{path}]")
    raise typer.Exit(0 if ok else 1)


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
    from ccf.settings import load_settings, refuse_placeholder_secrets
    from models.predict import run_predictor
    from models.registry import configure_auth

    settings = load_settings()
    refuse_placeholder_secrets(settings, ("mlflow", "kafka"))
    setup_logging(settings.log_level)
    configure_auth(settings)
    _threads(threads)
    if not settings.kafka.enabled:
        raise typer.BadParameter("ccf predict reads Kafka: set CCF_KAFKA__BOOTSTRAP_SERVERS")
    run_predictor(settings, alias=alias, poll_s=poll_s, from_beginning=from_beginning, device=device,
                  features_topic=features_topic, predictions_topic=predictions_topic)

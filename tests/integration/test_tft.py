"""The TFT for real: tiny CPU models trained on the shared Binance klines and on the synthetic venue, registered in the
session's MLflow server, gated, reloaded from checkpoint, served through real Kafka with a hot reload, and a
walk-forward report.

Kept small on purpose (hidden size 8, a few batches): the whole module runs in well under three minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ccf.engine import EngineConfig
from ccf.forecast.scoring import Metrics
from ccf.schemas import FeatureRow, Prediction, decode
from ccf.settings import Settings
from models.dataset import rows_to_frame
from models.network import NetConfig
from models.sources import FeatureEngines, rows_from_files
from models.train import TrainConfig, TrainResult
from tests.conftest import Services
from tests.datafiles import data_dir

pytestmark = [
    pytest.mark.integration,
    # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
    # mlflow 3.17 warns about its own `Any` type hints when mlflow.pyfunc is first imported
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]

KLINE_DAYS = ("2025-11-05", "2025-11-06", "2025-11-07")


def _settings(services: Services, **extra: Any) -> Settings:
    """The session's services, with a uuid experiment, model name and consumer group for this module."""
    tag = uuid.uuid4().hex[:12]
    return Settings(
        _env_prefix="CCF_TEST_NOTHING_",
        kafka={"bootstrap_servers": services.bootstrap_servers, "group_id": f"ccf-test-{tag}"},
        mlflow={"tracking_uri": services.mlflow_tracking_uri, "experiment": f"ccf-tft-test-{tag}",
                "model_name": f"ccf-tft-test-{tag}"},
        **extra,
    )


def _tiny(tmp: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "encoder_length": 24, "net": NetConfig(hidden_size=8, attention_heads=1, hidden_continuous_size=4),
        "batch_size": 64, "max_epochs": 2, "limit_train_batches": 6, "limit_val_batches": 3, "progress": False,
        "accelerator": "cpu", "checkpoint_dir": tmp, "val_fraction": 0.25,
    }
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is several times faster than two on a busy 2-core box
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def kline_rows() -> list[FeatureRow]:
    files = [data_dir() / "binance_spot_btcusdt_1m_klines" / f"BTCUSDT-1m-{d}.csv.gz" for d in KLINE_DAYS]
    return rows_from_files(files, Settings(_env_prefix="CCF_TEST_NOTHING_"))


@pytest.fixture(scope="module")
def mlflow_env(services: Services) -> Iterator[tuple[Settings, Any]]:
    from models.registry import open_client

    s = _settings(services)
    client = open_client(s)
    yield s, client
    with contextlib.suppress(Exception):  # nothing registered when an earlier step failed
        client.delete_registered_model(s.mlflow.model_name)


@pytest.fixture(scope="module")
def trained(kline_rows: list[FeatureRow], mlflow_env: tuple[Settings, Any],
            tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    from models.train import train

    s, client = mlflow_env
    return train(rows_to_frame(kline_rows), s, _tiny(tmp_path_factory.mktemp("ckpt")), client=client)


def test_train_on_real_klines_logs_and_registers_with_lineage(trained: TrainResult, mlflow_env: tuple[Settings, Any],
                                                              kline_rows: list[FeatureRow], tmp_path: Path) -> None:
    import mlflow.artifacts

    from models.registry import load_version

    s, client = mlflow_env
    run = client.get_run(trained.run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["ccf.artifact"] == "tft" and tags["ccf.feature_set"] == "kline.v1"
    assert len(tags["ccf.dataset_fingerprint"]) == 64 and tags["ccf.code_version"]
    assert params["dataset_fingerprint"] == trained.fitted.fingerprint
    assert params["encoder_length"] == "24" and params["net_hidden_size"] == "8"
    for model in ("tft", "naive", "river_lr", "river_ts", "ewma"):
        for h in (1, 5, 10, 20):
            assert metrics[f"val_{model}_h{h}_n"] > 0, (model, h)
    n = {metrics[f"val_{m}_h5_n"] for m in ("tft", "naive", "river_lr")}
    assert len(n) == 1, "every model is scored on the same targets"
    assert metrics["val_naive_h1_skill"] == 0.0 and "val_tft_h1_pinball" in metrics
    assert {"train_loss", "val_loss", "epoch_seconds"} <= set(metrics)
    plots = {f.path for f in client.list_artifacts(trained.run_id, "plots")}
    assert {"plots/loss.png", "plots/skill.png", "plots/coverage.png", "plots/calibration.png"} <= plots

    mv = client.get_model_version(s.mlflow.model_name, trained.version)
    assert mv.run_id == trained.run_id and mv.tags["ccf.artifact"] == "tft"
    assert mv.tags["ccf.gate"] == ("promote" if trained.decision.promote else "refuse")
    mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{mv.source}/MLmodel", dst_path=str(tmp_path),
                                                       tracking_uri=s.mlflow.tracking_uri)).read_text()
    assert "signature:" in mlmodel and "window_start" in mlmodel and "saved_input_example_info" in mlmodel
    assert "ccf_tft:" in mlmodel and "pickle" not in mlmodel and "python_function" not in mlmodel

    # the gate's verdict matches the scores, and the alias moved only if it said so
    skill = np.mean([m.skill for m in trained.scores["tft"].values()])
    assert trained.decision.promote == (skill > 0.0)
    champion = client.get_registered_model(s.mlflow.model_name).aliases.get("champion")
    assert (champion == trained.version) == trained.decision.promote

    loaded = load_version(client, s, s.mlflow.model_name, trained.version)
    assert loaded.spec == trained.fitted.spec
    _same_forecasts(loaded.model, trained.fitted.model, trained, kline_rows)


def _same_forecasts(a: Any, b: Any, trained: TrainResult, rows: list[FeatureRow]) -> None:
    from models.network import Layout, anchors, forecast_anchors

    spec = trained.fitted.spec
    an = anchors(trained.fitted.prepared, spec)
    an = type(an)(an.frame, an.positions[-50:])
    qa = forecast_anchors(a, spec, Layout.of(a, spec), an)
    qb = forecast_anchors(b, spec, Layout.of(b, spec), an)
    assert qa.shape == (50, 4, 3)
    np.testing.assert_allclose(qa, qb, rtol=1e-6, atol=1e-9)


def test_reload_from_checkpoint_gives_the_same_model(trained: TrainResult, kline_rows: list[FeatureRow]) -> None:
    from models.train import load_checkpoint

    ckpt = trained.fitted.checkpoint
    assert ckpt is not None and ckpt.is_file()
    model, spec = load_checkpoint(ckpt)
    assert spec == trained.fitted.spec
    _same_forecasts(model, trained.fitted.model, trained, kline_rows)
    assert [e["epoch"] for e in trained.fitted.history] == [0.0, 1.0]
    assert all(e["seconds"] is not None and e["seconds"] > 0 for e in trained.fitted.history)


def test_train_on_the_synthetic_venue(services: Services, tmp_path: Path) -> None:
    from ccf.synthetic import SyntheticVenue
    from models.registry import open_client
    from models.train import train

    s = _settings(services)
    venue = SyntheticVenue(["BTC-USDT", "ETH-USDT"], seed=3, end_ns=None)
    engines = FeatureEngines(EngineConfig(models=()))
    rows: list[FeatureRow] = []
    while len(rows) < 2 * 1500:  # 25 minutes of 1-second windows per symbol
        rows += engines.rows(venue.next_batch(20_000))
    client = open_client(s)
    try:
        result = train(rows_to_frame(rows), s, _tiny(tmp_path), client=client)
        assert result.fitted.spec.feature_set == "book.v1"
        assert result.fitted.spec.groups == ("synthetic:BTC-USDT", "synthetic:ETH-USDT")
        assert {"imbalance_1", "ofi", "micro_dev", "spread_bps"} <= set(result.fitted.spec.inputs)
        assert result.scores["tft"][1].n > 100 and result.scores["naive"][1].n == result.scores["tft"][1].n
        assert client.get_model_version(s.mlflow.model_name, result.version).run_id == result.run_id
    finally:
        client.delete_registered_model(s.mlflow.model_name)


def test_gate_promotes_and_refuses_in_the_registry(trained: TrainResult, mlflow_env: tuple[Settings, Any]) -> None:
    from models.evaluate import gate
    from models.registry import alias_version, register
    from models.train import promote_if

    s, client = mlflow_env
    name = s.mlflow.model_name

    def version() -> str:
        run = client.create_run(client.get_run(trained.run_id).info.experiment_id, tags={"ccf.artifact": "tft"})
        v = register(client, s, run.info.run_id, trained.fitted.model, trained.fitted.spec,
                     pd.DataFrame({"a": [1.0]}), None)
        client.set_terminated(run.info.run_id)
        return v

    def table(sse: float) -> dict[int, Metrics]:
        return {h: Metrics(n=100, sq_sum=sse, naive_sq_sum=1.0) for h in (1, 5, 10, 20)}

    v1, v2, v3 = version(), version(), version()
    assert promote_if(client, s, v1, gate(table(0.98), None))  # beats naive, no champion yet
    assert alias_version(client, name) == v1
    assert not promote_if(client, s, v2, gate(table(0.99), table(0.98)))  # beats naive, not the champion
    assert not promote_if(client, s, v2, gate(table(1.01), None))  # worse than naive
    assert alias_version(client, name) == v1
    assert client.get_model_version(name, v2).tags["ccf.gate"] == "refuse"
    assert promote_if(client, s, v3, gate(table(0.95), table(0.98)))
    assert alias_version(client, name) == v3


def test_untrusted_versions_are_never_loaded(trained: TrainResult, mlflow_env: tuple[Settings, Any]) -> None:
    from models.predict import ChampionWatcher
    from models.registry import UntrustedModelError, load_version, set_alias

    s, client = mlflow_env
    name = s.mlflow.model_name
    good = client.get_model_version(name, trained.version)
    stranger = client.create_model_version(name, source=good.source, run_id=good.run_id)  # no ccf.artifact tag
    with pytest.raises(UntrustedModelError, match=r"no tag ccf\.artifact"):
        load_version(client, s, name, stranger.version)
    other_exp = client.create_experiment(f"not-ours-{uuid.uuid4().hex}")
    run = client.create_run(other_exp, tags={"ccf.artifact": "tft"})
    foreign = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags={"ccf.artifact": "tft"})
    with pytest.raises(UntrustedModelError, match="experiment"):
        load_version(client, s, name, foreign.version)
    before = client.get_registered_model(name).aliases.get("champion")
    set_alias(client, name, foreign.version)
    assert ChampionWatcher(client, s).poll(force=True) is None  # refused and logged, never loaded
    if before:
        set_alias(client, name, before)
    client.delete_experiment(other_exp)


def test_predictor_round_trip_through_kafka_with_hot_reload(
    trained: TrainResult, mlflow_env: tuple[Settings, Any], kline_rows: list[FeatureRow],
    kafka_topic: Any, services: Services,
) -> None:
    from confluent_kafka import Consumer

    from ccf.store.kafka_out import KafkaWriter
    from models.predict import run_predictor
    from models.registry import register, set_alias

    s, client = mlflow_env
    name = s.mlflow.model_name
    feats, preds_topic = kafka_topic(), kafka_topic()
    set_alias(client, name, trained.version)
    writer = KafkaWriter(s.model_copy(update={"kafka": s.kafka.model_copy(update={"topic_prefix": ""})}))
    history = trained.fitted.spec.history
    writer.send(feats, kline_rows[:history + 9])  # 10 full windows
    writer.flush()
    stop = threading.Event()
    server = threading.Thread(target=run_predictor, args=(s,), daemon=True, kwargs={
        "features_topic": feats, "predictions_topic": preds_topic, "poll_s": 0.5, "from_beginning": True,
        "stop": stop, "client": client, "to_kafka": True})
    server.start()
    consumer = Consumer({"bootstrap.servers": services.bootstrap_servers, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([preds_topic])
    got: list[Prediction] = []

    def read_until(cond: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error() is None:
                    rec = decode(m.value())
                    assert isinstance(rec, Prediction)
                    got.append(rec)
        assert cond(), f"{len(got)} predictions"

    try:
        read_until(lambda: len(got) >= 40)
        assert len(got) == 40 and {p.model_version for p in got} == {trained.version}
        assert {p.horizon_steps for p in got} == {1, 5, 10, 20} and all(p.model == "tft" for p in got)
        assert all(set(p.quantiles) == {"0.1", "0.5", "0.9"} for p in got)
        assert sorted({p.issued_at for p in got}) == [r.window_end for r in kline_rows[history - 1:history + 9]]

        # a new version becomes champion: the running predictor picks it up, no restart
        run = client.create_run(client.get_run(trained.run_id).info.experiment_id, tags={"ccf.artifact": "tft"})
        v2 = register(client, s, run.info.run_id, trained.fitted.model, trained.fitted.spec,
                      pd.DataFrame({"a": [1.0]}), None)
        set_alias(client, name, v2)
        time.sleep(1.5)  # more than poll_s
        writer.send(feats, kline_rows[history + 9:history + 19])
        writer.flush()
        read_until(lambda: any(p.model_version == v2 for p in got))
        assert server.is_alive()
    finally:
        stop.set()
        server.join(30)
        consumer.close()
        writer.close()
    assert not server.is_alive()


def test_predictor_in_process_source_and_callback(trained: TrainResult, mlflow_env: tuple[Settings, Any],
                                                   kline_rows: list[FeatureRow]) -> None:
    from models.predict import run_predictor
    from models.registry import set_alias

    s, client = mlflow_env
    set_alias(client, s.mlflow.model_name, trained.version)
    h = trained.fitted.spec.history
    got: list[Prediction] = []
    predictor = run_predictor(s, source=[kline_rows[:h], kline_rows[h:h + 5]], on_predictions=got.extend,
                              client=client, to_kafka=False)
    assert predictor is not None and predictor.loaded.version == trained.version
    assert len(got) == 6 * 4 and {p.issued_at for p in got} == {r.window_end for r in kline_rows[h - 1:h + 5]}


def test_walkforward_writes_a_report(tmp_path: Path) -> None:
    from models.walkforward import run_walkforward

    d = data_dir() / "binance_spot_btcusdt_1m_klines"
    out = tmp_path / "wf"
    summary = run_walkforward([d / "BTCUSDT-1m-2025-11-06.csv.gz", d / "BTCUSDT-1m-2025-11-07.csv.gz"],
                              [d / "BTCUSDT-1m-2025-11-08.csv.gz"], out, Settings(_env_prefix="CCF_TEST_NOTHING_"),
                              config=_tiny(tmp_path / "ckpt"))
    assert summary["test_rows"] == 1440 and summary["anchors"] == 1440  # the encoder reaches back into A
    scores = json.loads((out / "summary.json").read_text())["scores"]
    by = {(r["model"], r["horizon"]): r for r in scores}
    for h in (1, 5, 10, 20):
        assert by[("tft", h)]["n"] == by[("naive", h)]["n"] == by[("river_lr", h)]["n"] == 1440 - h
    page = (out / "report.html").read_text()
    for png in ("bands_h1.png", "bands_h20.png", "skill.png", "coverage.png", "calibration.png", "loss.png"):
        assert (out / png).stat().st_size < 200_000 and png in page
    assert "| 20 | tft |" in (out / "report.md").read_text()
    import pyarrow.parquet as pq  # the tables of a plain backtest, with the store's column names

    assert pq.read_table(out / "features.parquet").num_rows == summary["train_rows"] + summary["test_rows"]
    pooled = pq.read_table(out / "scores.parquet").to_pylist()
    assert {(r["model"], r["horizon_steps"]): r["n"] for r in pooled} == {k: r["n"] for k, r in by.items()}
    assert {r["symbol"] for r in pooled} == {"*"}
    preds = pq.read_table(out / "predictions.parquet", columns=["model", "horizon_steps"]).to_pylist()
    assert sum(p["model"] == "tft" for p in preds) == 1440 * 4


def test_features_read_back_from_questdb(kline_rows: list[FeatureRow], services: Services) -> None:
    from ccf.store.questdb_store import QuestDBWriter, http_sql
    from ccf.store.tables import feature_row_values, features_table
    from models.dataset import check_frame
    from models.sources import frame_from_store

    prefix = f"t_{uuid.uuid4().hex[:12]}_"
    s = Settings(_env_prefix="CCF_TEST_NOTHING_", questdb={"http_url": services.questdb_http_url,
                                                           "table_prefix": prefix})
    writer = QuestDBWriter(services.questdb_http_url, [features_table()], table_prefix=prefix)
    try:
        writer.upsert("features", [feature_row_values(r) for r in kline_rows[:200]])
        t0, minute = kline_rows[50].window_start, 60_000_000_000
        deadline = time.monotonic() + 30
        frame = pd.DataFrame()
        while time.monotonic() < deadline:  # WAL tables apply writes asynchronously
            frame = frame_from_store(s, t0, t0 + 100 * minute, ["binance:BTC-USDT"])
            if len(frame) == 100:
                break
            time.sleep(0.3)
        assert len(frame) == 100
        check_frame(frame)
        assert frame["window_start"].tolist() == [r.window_start for r in kline_rows[50:150]]
        assert frame["window_end"].tolist() == [r.window_end for r in kline_rows[50:150]]
        assert frame["mid"].tolist() == [r.features["mid"] for r in kline_rows[50:150]]
        assert frame["book_valid"].all() and (frame["feature_set"] == "kline.v1").all()
    finally:
        writer.close()
        http_sql(services.questdb_http_url, f'DROP TABLE IF EXISTS "{prefix}features"')


def test_ccf_train_command(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ccf.cli import app
    from models.registry import open_client

    name = f"ccf-tft-cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CCF_MLFLOW__MODEL_NAME", name)
    monkeypatch.setenv("CCF_MLFLOW__EXPERIMENT", name)
    d = data_dir() / "binance_spot_btcusdt_1m_klines"
    args = ["train", "-i", str(d / "BTCUSDT-1m-2025-11-09.csv.gz"), "-i", str(d / "BTCUSDT-1m-2025-11-10.csv.gz"),
            "--start", "2025-11-09T06:00", "--encoder-length", "16", "--hidden-size", "8", "--heads", "1",
            "--max-epochs", "1", "--limit-train-batches", "3", "--no-progress", "--accelerator", "cpu",
            "--checkpoint-dir", str(tmp_path), "--models", "naive,river_lr"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"{name} version 1 (run " in result.output and "river_lr" in result.output
    client = open_client(settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
        update={"model_name": name, "experiment": name})}))
    run = client.get_run(client.get_model_version(name, "1").run_id)
    assert int(run.data.tags["ccf.data_start_ns"]) == 1762668000 * 10**9  # 2025-11-09T06:00Z: --start applied
    client.delete_registered_model(name)

"""The session's MLflow tracking server for real: experiment, run, artifact upload, model version, alias."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from ccf.settings import Settings

pytestmark = pytest.mark.integration


def test_run_artifact_registered_version_and_alias(settings: Settings, tmp_path: Path) -> None:
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = client.create_experiment(f"ccf-test-{uuid.uuid4().hex}")
    run = client.create_run(exp_id, run_name="smoke")
    run_id = run.info.run_id
    client.log_param(run_id, "horizon", "5")
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        client.log_metric(run_id, "loss", loss, step=step)

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.json").write_text(json.dumps({"w": [1.0, 2.0]}))
    client.log_artifacts(run_id, str(model_dir), artifact_path="model")
    client.set_terminated(run_id)

    finished = client.get_run(run_id)
    assert finished.data.params == {"horizon": "5"}
    assert finished.data.metrics == {"loss": 0.25}
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.9, 0.5, 0.25]
    assert [f.path for f in client.list_artifacts(run_id, "model")] == ["model/weights.json"]
    assert finished.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts should go through the server"

    name = f"ccf-test-model-{uuid.uuid4().hex}"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{finished.info.artifact_uri}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)

    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == version.version
    assert champion.run_id == run_id
    assert "champion" in champion.aliases

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{champion.source}/weights.json", dst_path=str(tmp_path / "dl"), tracking_uri=uri
    )
    assert json.loads(Path(local).read_text()) == {"w": [1.0, 2.0]}
    client.delete_registered_model(name)
    client.delete_experiment(exp_id)

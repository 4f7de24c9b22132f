"""The TFT through the session's real MLflow server: registered as weights and JSON, loaded back with the same
forecasts; a forged version whose artefact is a pickle is refused by the predictor and never unpickled."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ccf.settings import Settings
from models.artifact import CONFIG_FILE, WEIGHTS_FILE
from tests.conftest import Services
from tests.tiny_tft import TinyTFT, evil_pickle, forecasts, kline_rows, tiny_tft

pytestmark = [
    pytest.mark.integration,
    # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]


@pytest.fixture(scope="module")
def tiny() -> TinyTFT:
    return tiny_tft(kline_rows("2025-11-01"))


@pytest.fixture(scope="module")
def registry_env(services: Services) -> Iterator[tuple[Settings, Any]]:
    """Settings with a uuid experiment and model name on the session's server, and a client."""
    from models.registry import open_client

    tag = uuid.uuid4().hex[:12]
    s = Settings(_env_prefix="CCF_TEST_NOTHING_", mlflow={
        "tracking_uri": services.mlflow_tracking_uri, "experiment": f"ccf-artefact-{tag}",
        "model_name": f"ccf-artefact-{tag}"})
    client = open_client(s)
    yield s, client
    with contextlib.suppress(Exception):  # nothing registered when an earlier step failed
        client.delete_registered_model(s.mlflow.model_name)


def _our_run(client: Any, settings: Settings) -> str:
    from models.registry import ARTIFACT_TAG, ARTIFACT_VALUE, experiment_id

    run = client.create_run(experiment_id(client, settings), tags={ARTIFACT_TAG: ARTIFACT_VALUE})
    return str(run.info.run_id)


def test_registered_model_loads_back_with_the_same_forecasts(tiny: TinyTFT, registry_env: tuple[Settings, Any],
                                                             tmp_path: Path) -> None:
    import mlflow.artifacts

    from models.registry import load_version, register

    s, client = registry_env
    run_id = _our_run(client, s)
    example = pd.DataFrame({"window_start": [1, 2], "mid": [100.0, 100.5]})
    version = register(client, s, run_id, tiny.model, tiny.spec, example, pd.DataFrame({"q": [0.1, 0.2]}))
    files = {f.path.removeprefix("model/") for f in client.list_artifacts(run_id, "model")}
    assert {CONFIG_FILE, WEIGHTS_FILE, "MLmodel", "input_example.json"} <= files
    assert not {f for f in files if f.endswith((".pth", ".pkl", ".pt"))} and "data" not in files
    mv = client.get_model_version(s.mlflow.model_name, version)
    mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{mv.source}/MLmodel", dst_path=str(tmp_path),
                                                       tracking_uri=s.mlflow.tracking_uri)).read_text()
    assert "signature:" in mlmodel and "ccf_tft:" in mlmodel and "pickle" not in mlmodel

    loaded = load_version(client, s, s.mlflow.model_name, version)
    assert loaded.spec == tiny.spec and loaded.version == version and loaded.run_id == run_id
    assert np.array_equal(forecasts(loaded.model, tiny), forecasts(tiny.model, tiny))


@pytest.mark.parametrize("payload", ["mlflow-pytorch-pickle", "pickle-as-weights"])
def test_a_forged_pickled_version_is_refused_by_the_predictor(
    payload: str, tiny: TinyTFT, registry_env: tuple[Settings, Any], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every provenance check passes (tags, experiment, source in its run): only the format gives it away."""
    from models.artifact import save_model
    from models.predict import ChampionWatcher
    from models.registry import ARTIFACT_TAG, ARTIFACT_VALUE, MODEL_PATH, UntrustedModelError, load_version, set_alias

    s, client = registry_env
    name = s.mlflow.model_name
    marker = tmp_path / f"unpickled-{payload}"
    forged = tmp_path / "forged" / MODEL_PATH
    if payload == "mlflow-pytorch-pickle":  # what mlflow.pytorch.save_model(serialization_format="pickle") writes
        (forged / "data").mkdir(parents=True)
        (forged / "data" / "model.pth").write_bytes(evil_pickle(marker))
        (forged / "data" / "pickle_module_info.txt").write_text("mlflow.pytorch.pickle_module")
        (forged / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n    serialization_format: pickle\n")
    else:  # our own file names, the weights file a pickle
        save_model(tiny.model, tiny.spec, forged)
        (forged / WEIGHTS_FILE).write_bytes(evil_pickle(marker))
    run_id = _our_run(client, s)
    client.log_artifacts(run_id, str(forged), artifact_path=MODEL_PATH)
    with contextlib.suppress(Exception):  # the first parameter's run made it
        client.create_registered_model(name, tags={ARTIFACT_TAG: ARTIFACT_VALUE})
    mv = client.create_model_version(name, source=f"{client.get_run(run_id).info.artifact_uri}/{MODEL_PATH}",
                                     run_id=run_id, tags={ARTIFACT_TAG: ARTIFACT_VALUE})
    with pytest.raises(UntrustedModelError, match=f"{name} version {mv.version}: .*(never unpickled|not the weights)"):
        load_version(client, s, name, mv.version)

    set_alias(client, name, mv.version)
    watcher = ChampionWatcher(client, s)
    with caplog.at_level(logging.ERROR, logger="models.predict"):
        assert watcher.poll(force=True) is None
        assert watcher.poll(force=True) is None  # not downloaded again
    assert list(watcher.refused) == [mv.version]
    assert [r.levelno for r in caplog.records if "not loading" in r.getMessage()] == [logging.ERROR]
    assert not marker.exists()

"""MLflow for the TFT: where tracking lives, logging a trained model, registering it, and loading only our own.

Tracking: ``settings.mlflow.tracking_uri`` (a server in production); empty means an embedded sqlite store at
``<run_dir>/mlflow/mlflow.db`` with artifacts under ``<run_dir>/mlflow/artifacts``. Every call takes an explicit
:class:`MlflowClient`; nothing sets MLflow's global tracking URI.

A version's artifact is a :mod:`models.artifact` folder: safetensors weights and a JSON file that rebuilds the
network, plus MLflow's ``MLmodel`` (signature, input example; no loadable flavour), never a pickle. :func:`load_version`
checks provenance first: the version and its run carry the tag ``ccf.artifact=tft``, the run belongs to our
experiment (``settings.mlflow.experiment``), and the version's source is inside that run's artifacts. Then it loads
the folder the one way :func:`models.artifact.load_model` knows; anything else (a pickle-format model among them)
raises :class:`UntrustedModelError` and nothing is unpickled.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccf.settings import Settings
from models.artifact import CONFIG_FILE, FORMAT, WEIGHTS_FILE, load_model, save_model
from models.artifact import UntrustedModelError as UntrustedModelError  # re-exported: what load_version raises
from models.dataset import FeatureSpec

logger = logging.getLogger(__name__)

ARTIFACT_TAG = "ccf.artifact"
ARTIFACT_VALUE = "tft"
CHAMPION = "champion"
MODEL_PATH = "model"
FLAVOR = "ccf_tft"


def tracking_uri(settings: Settings) -> str:
    if settings.mlflow.enabled:
        return settings.mlflow.tracking_uri
    return "sqlite:///" + str((settings.run_dir / "mlflow" / "mlflow.db").resolve())


def artifact_location(settings: Settings) -> str | None:
    """Where a new experiment keeps artifacts: local files when embedded, the server's default otherwise."""
    if settings.mlflow.enabled:
        return None
    return (settings.run_dir / "mlflow" / "artifacts").resolve().as_uri()


def open_client(settings: Settings) -> Any:
    """An :class:`MlflowClient` for the settings' tracking store and registry (creates the embedded store's folder)."""
    from mlflow.tracking import MlflowClient

    if not settings.mlflow.enabled:
        (settings.run_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=settings.mlflow.registry_uri or uri)


def configure_auth(settings: Settings) -> None:
    """MLflow reads server credentials from the environment only: entry points call this once, before any client."""
    import os

    if settings.mlflow.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username
    if settings.mlflow.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow.password.get_secret_value()


def experiment_id(client: Any, settings: Settings) -> str:
    exp = client.get_experiment_by_name(settings.mlflow.experiment)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(settings.mlflow.experiment, artifact_location=artifact_location(settings)))


def register(
    client: Any,
    settings: Settings,
    run_id: str,
    model: Any,
    spec: FeatureSpec,
    input_example: Any,
    output_example: Any,
) -> str:
    """Save ``model`` (weights and JSON, see :mod:`models.artifact`) with its signature and input example into the
    run, and register a new version."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="ccf-model-") as tmp:
        local = Path(tmp) / MODEL_PATH
        save_model(model, spec, local)
        _write_mlmodel(local, input_example, output_example)
        client.log_artifacts(run_id, str(local), artifact_path=MODEL_PATH)
    name = settings.mlflow.model_name
    try:
        client.create_registered_model(name, tags={ARTIFACT_TAG: ARTIFACT_VALUE})
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    run = client.get_run(run_id)
    mv = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/{MODEL_PATH}", run_id=run_id,
        tags={ARTIFACT_TAG: ARTIFACT_VALUE, "ccf.feature_set": spec.feature_set},
    )
    logger.info("registered %s version %s from run %s", name, mv.version, run_id)
    return str(mv.version)


def _write_mlmodel(local: Path, input_example: Any, output_example: Any) -> None:
    """MLflow's ``MLmodel`` beside our files, for its UI: signature, input example, our format as the only flavour
    (no ``python_function``: MLflow's own loaders have nothing to load)."""
    from importlib.metadata import version

    with warnings.catch_warnings():
        # mlflow 3.17 warns about its own `Any` type hints while importing mlflow.pyfunc (under mlflow.models), once
        # per process
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
        from mlflow.models import Model, infer_signature
        from mlflow.models.utils import _save_example  # what every flavour calls to write the input example

    with warnings.catch_warnings():
        # a hint that integer columns cannot hold missing values: ours are window times, never missing
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column")
        signature = infer_signature(input_example, output_example)
    mlmodel = Model(signature=signature)
    _save_example(mlmodel, input_example, str(local))
    mlmodel.add_flavor(FLAVOR, format=FORMAT, config=CONFIG_FILE, weights=WEIGHTS_FILE,
                       requirements=[f"{p}=={version(p)}" for p in _REQUIREMENTS])
    mlmodel.save(str(local / "MLmodel"))


_REQUIREMENTS = ("torch", "pytorch-forecasting", "lightning", "safetensors", "mlflow")


def alias_version(client: Any, name: str, alias: str = CHAMPION) -> str | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_alias(client: Any, name: str, version: str, alias: str = CHAMPION) -> None:
    client.set_registered_model_alias(name, alias, version)
    logger.info("alias %s of %s -> version %s", alias, name, version)


def verify_ours(client: Any, settings: Settings, name: str, version: str) -> Any:
    """The model version, if it passes every provenance check; else :class:`UntrustedModelError`."""
    mv = client.get_model_version(name, version)
    where = f"{name} version {version}"
    if (mv.tags or {}).get(ARTIFACT_TAG) != ARTIFACT_VALUE:
        raise UntrustedModelError(f"{where}: no tag {ARTIFACT_TAG}={ARTIFACT_VALUE}")
    if not mv.run_id:
        raise UntrustedModelError(f"{where}: no run")
    run = client.get_run(mv.run_id)
    if run.data.tags.get(ARTIFACT_TAG) != ARTIFACT_VALUE:
        raise UntrustedModelError(f"{where}: run {mv.run_id} has no tag {ARTIFACT_TAG}={ARTIFACT_VALUE}")
    exp = client.get_experiment(run.info.experiment_id)
    if exp is None or exp.name != settings.mlflow.experiment:
        got = None if exp is None else exp.name
        raise UntrustedModelError(f"{where}: run in experiment {got!r}, not {settings.mlflow.experiment!r}")
    if str(mv.source).rstrip("/") != f"{run.info.artifact_uri}/{MODEL_PATH}":
        raise UntrustedModelError(f"{where}: source {mv.source} is not the run's own {MODEL_PATH} artifact")
    return mv


@dataclass(frozen=True)
class LoadedModel:
    """A trusted TFT and what goes with it."""

    name: str
    version: str
    run_id: str
    model: Any
    spec: FeatureSpec


def load_version(client: Any, settings: Settings, name: str, version: str, device: str = "cpu") -> LoadedModel:
    """Download and load one of our versions (provenance checked first, see the module docstring)."""
    import mlflow.artifacts

    mv = verify_ours(client, settings, name, version)
    with tempfile.TemporaryDirectory(prefix="ccf-load-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp,
                                                         tracking_uri=tracking_uri(settings)))
        try:
            model, spec = load_model(local, device)
        except UntrustedModelError as exc:
            raise UntrustedModelError(f"{name} version {version}: {exc}") from exc
    return LoadedModel(name, str(version), str(mv.run_id), model, spec)


def load_champion(client: Any, settings: Settings, alias: str = CHAMPION, device: str = "cpu") -> LoadedModel | None:
    version = alias_version(client, settings.mlflow.model_name, alias)
    if version is None:
        return None
    return load_version(client, settings, settings.mlflow.model_name, version, device)

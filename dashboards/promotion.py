"""Whether the TFT versions that forecast were promoted: what the model registry says of each.

``ccf train`` tags every version it registers ``ccf.gate=promote|refuse`` (:func:`models.train.promote_if`) and
moves the ``champion`` alias only on ``promote``; ``ccf predict`` serves the champion, ``ccf demo`` serves the
version it has just trained whatever the gate said. The predictions table names the version (``model_version``), so
the app asks the registry about each version it sees: ``champion`` (the alias points at it), ``promoted`` (the gate
said so, the alias has moved on since), ``not promoted`` (the gate refused it). A version the registry does not know,
or a registry that cannot be reached, gets no label (and one log line).

The embedded registry (no ``CCF_MLFLOW__TRACKING_URI``) is read only when its file exists: the app never creates it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from ccf.settings import Settings

logger = logging.getLogger(__name__)

GATE_TAG = "ccf.gate"  # models.train.promote_if writes it


class Promotion:
    """Cached answers of the registry: a version's gate tag never changes; the champion alias is re-read every
    ``recheck_s``. :meth:`labels` never waits on the registry: what it does not know yet is looked up on a
    background thread and shows from a later call on."""

    def __init__(self, settings: Settings, recheck_s: float = 30.0) -> None:
        self.settings = settings
        self.recheck_s = recheck_s
        self._gate: dict[str, str | None] = {}
        self._champion: str | None = None
        self._champion_at = -float("inf")
        self._client: Any = None
        self._warned = False
        self._worker: threading.Thread | None = None

    def labels(self, versions: Iterable[str]) -> dict[str, str]:
        """``{version: "champion" | "promoted" | "not promoted"}`` for the versions the registry is known to know."""
        wanted = sorted(set(versions))
        if not wanted:
            return {}
        unknown = [v for v in wanted if v not in self._gate]
        stale = time.monotonic() - self._champion_at > self.recheck_s
        if (unknown or stale) and (self._worker is None or not self._worker.is_alive()):
            self._worker = threading.Thread(target=self._look_up, args=(unknown,), name="ccf-app-registry",
                                            daemon=True)
            self._worker.start()
        gate, champion = dict(self._gate), self._champion
        out = {}
        for v in wanted:
            if v == champion:
                out[v] = "champion"
            elif gate.get(v) is not None:
                out[v] = "promoted" if gate[v] == "promote" else "not promoted"
        return out

    def _look_up(self, versions: list[str]) -> None:
        try:
            client = self._open()
            if client is None:
                self._champion_at = time.monotonic()  # look again later: a TFT may be trained meanwhile
                return
            from models.registry import alias_version

            name = self.settings.mlflow.model_name
            for v in versions:
                self._gate[v] = _gate_of(client, name, v)
            self._champion = alias_version(client, name)
        except Exception as exc:  # an MLflow server we do not own fails in many ways; the labels just stay away
            if not self._warned:
                logger.warning("model registry not readable, TFT versions shown unlabelled: %s", exc)
                self._warned = True
        self._champion_at = time.monotonic()

    def _open(self) -> Any:
        if self._client is None:
            from models.registry import tracking_uri

            m = self.settings.mlflow
            if not m.enabled and not (self.settings.run_dir / "mlflow" / "mlflow.db").is_file():
                return None  # no registry here yet (no TFT trained): nothing to say, and nothing created
            from mlflow.tracking import MlflowClient

            uri = tracking_uri(self.settings)
            self._client = MlflowClient(tracking_uri=uri, registry_uri=m.registry_uri or uri)
        return self._client


def _gate_of(client: Any, name: str, version: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_model_version(name, version).tags or {}
    except MlflowException:  # not a version of this model (a demo's "demo" version, another registry)
        return None
    gate = tags.get(GATE_TAG)
    return None if gate is None else str(gate)


"""The TFT on disk without pickle: its weights in safetensors and a JSON file that rebuilds the network.

A model folder holds two files (and, when registered, MLflow's ``MLmodel`` metadata beside them):

``weights.safetensors``
    the module's ``state_dict`` (``safetensors.torch.save_model``: tensors only, shared ones stored once).
``tft.json``
    ``format`` (:data:`FORMAT`), the :class:`~models.dataset.FeatureSpec`, the network's hyperparameters (plain
    JSON: sizes, variable names, embedding labels), the loss (quantiles and decoder step of each target) and the
    fitted state of each target normaliser (method, ``center_``, ``scale_``).

:func:`load_model` rebuilds a :class:`TemporalFusionTransformer` from the JSON alone and fills it from the weights;
neither file can run code when read. Anything else (a pickle, a missing or unknown file, JSON that does not fit)
raises :class:`UntrustedModelError`; nothing in the folder is ever unpickled. The training dataset's parameters
are not kept: inference builds its own batches (:func:`models.network.make_batch`), not a ``TimeSeriesDataSet``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ccf.errors import CCFError
from models.dataset import FeatureSpec

FORMAT = "ccf.tft/1"
CONFIG_FILE = "tft.json"
WEIGHTS_FILE = "weights.safetensors"
# set from the spec, the loss and the normalisers in tft.json, or only needed while training
_REBUILT = frozenset({"loss", "logging_metrics", "output_transformer", "dataset_parameters"})
_NORMALIZER_KEYS = frozenset({"method", "center", "center_", "scale_"})


class UntrustedModelError(CCFError):
    """A model that is not one of ours, or not in our weights-and-JSON format: never loaded, never unpickled."""


def save_model(model: Any, spec: FeatureSpec, folder: Path) -> None:
    """Write ``model`` (a TFT made by :func:`models.network.build_network`) into ``folder`` (created)."""
    from safetensors.torch import save_model as save_weights

    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "spec": spec.to_dict(), "hparams": _hparams(model), "loss": _loss(model),
              "target_normalizers": _normalizers(model)}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n")
    save_weights(model, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})


def load_model(folder: Path, device: str = "cpu") -> tuple[Any, FeatureSpec]:
    """The TFT and its spec from a folder :func:`save_model` wrote; :class:`UntrustedModelError` for anything else."""
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights.is_file():
        found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())[:10]
        raise UntrustedModelError(f"{folder}: not a {FORMAT} model ({CONFIG_FILE} and {WEIGHTS_FILE}); it holds "
                                  f"{found or 'nothing'}; refused, never unpickled")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            got = config.get("format") if isinstance(config, dict) else type(config).__name__
            raise ValueError(f"format {got!r}, not {FORMAT!r}")
        spec = FeatureSpec.from_dict(config["spec"])
        _fits(config["hparams"], spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise UntrustedModelError(f"{config_path}: does not describe a TFT: {type(exc).__name__}: {exc}") from exc
    try:
        model = _rebuild(config)
    except Exception as exc:  # whatever the library raises on JSON that does not fit: that file, not our code
        raise UntrustedModelError(f"{config_path}: does not describe a TFT: {type(exc).__name__}: {exc}") from exc
    _load_weights(model, weights, device)
    model.eval()
    model.ccf_spec = spec.to_dict()
    return model, spec


def _load_weights(model: Any, weights: Path, device: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_weights

    try:
        load_weights(model, str(weights), strict=True, device=device)
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:  # not safetensors, or not this network's
        raise UntrustedModelError(f"{weights}: not the weights of this network: {' '.join(str(exc).split())[:300]}"
                                  ) from exc
    model.to(device)


# -- to JSON ------------------------------------------------------------------------------------------------------
def _hparams(model: Any) -> dict[str, Any]:
    hp = {k: v for k, v in dict(model.hparams).items() if k not in _REBUILT}
    try:
        plain: dict[str, Any] = json.loads(json.dumps(hp, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a hyperparameter of the TFT is not plain JSON: {exc}") from exc
    return plain


def _loss(model: Any) -> dict[str, Any]:
    from pytorch_forecasting.metrics import MultiLoss  # type: ignore[import-untyped]

    from models.network import HorizonQuantileLoss

    loss = model.loss
    parts = list(loss.metrics) if isinstance(loss, MultiLoss) else [loss]
    if not all(type(p) is HorizonQuantileLoss for p in parts):
        raise ValueError(f"only a MultiLoss of HorizonQuantileLoss is saved, not {loss!r}")
    return {"quantiles": [list(map(float, p.quantiles)) for p in parts], "positions": [int(p.position) for p in parts]}


def _normalizers(model: Any) -> list[dict[str, Any]]:
    from pytorch_forecasting.data import TorchNormalizer  # type: ignore[import-untyped]
    from pytorch_forecasting.data.encoders import MultiNormalizer  # type: ignore[import-untyped]

    out = model.output_transformer
    parts = list(out.normalizers) if isinstance(out, MultiNormalizer) else [out]
    saved = []
    for n in parts:
        if type(n) is not TorchNormalizer or n.transformation is not None or n.method_kwargs:
            raise ValueError(f"only plain TorchNormalizers are saved, not {n!r}")
        center, scale = (float(v) for v in n.get_parameters())
        saved.append({"method": n.method, "center": bool(n.center), "center_": center, "scale_": scale})
    return saved


# -- from JSON ----------------------------------------------------------------------------------------------------
def _fits(hp: Any, spec: FeatureSpec) -> None:
    """The network's inputs are the ones :func:`models.network.make_batch` fills for ``spec`` (else ValueError)."""
    from models.dataset import TIME_FEATURES

    reals, cats = set(hp["x_reals"]), list(hp["x_categoricals"])
    missing = sorted({*spec.targets, *spec.inputs, *TIME_FEATURES} - reals)
    labels = hp["embedding_labels"].get("group", {})
    if missing or cats != ["group"] or not set(spec.groups) <= set(labels):
        raise ValueError(f"the network's inputs do not fit the spec: missing reals {missing}, categoricals {cats}, "
                         f"groups without a label {sorted(set(spec.groups) - set(labels))}")


def _rebuild(config: dict[str, Any]) -> Any:
    import inspect

    from pytorch_forecasting import TemporalFusionTransformer  # type: ignore[import-untyped]
    from pytorch_forecasting.models.base import BaseModel  # type: ignore[import-untyped]
    from torch import nn

    from models.network import horizon_loss, quiet_library_warnings

    hp = config["hparams"]
    if not isinstance(hp, dict):
        raise TypeError("hparams is not an object")
    known = (set(inspect.signature(TemporalFusionTransformer.__init__).parameters)
             | set(inspect.signature(BaseModel.__init__).parameters)) - {"self", "kwargs"} - _REBUILT
    unknown = sorted(set(hp) - known)
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}")
    hp = dict(hp)
    hp["embedding_sizes"] = {str(k): tuple(int(x) for x in v) for k, v in hp.get("embedding_sizes", {}).items()}
    loss = config["loss"]
    with quiet_library_warnings():
        return TemporalFusionTransformer(
            **hp, loss=horizon_loss(loss["quantiles"], loss["positions"]), logging_metrics=nn.ModuleList([]),
            output_transformer=_normalizer(config["target_normalizers"]))


def _normalizer(saved: list[dict[str, Any]]) -> Any:
    import numpy as np
    from pytorch_forecasting.data import TorchNormalizer
    from pytorch_forecasting.data.encoders import MultiNormalizer

    if not isinstance(saved, list) or not saved:
        raise TypeError("target_normalizers is not a non-empty list")
    parts = []
    for d in saved:
        if not isinstance(d, dict) or set(d) != _NORMALIZER_KEYS:
            raise ValueError(f"a target normaliser needs exactly {sorted(_NORMALIZER_KEYS)}, got {d!r}")
        center, scale = float(d["center_"]), float(d["scale_"])
        if not (math.isfinite(center) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"a target normaliser's center {center} / scale {scale} cannot be used")
        n = TorchNormalizer(method=str(d["method"]), center=bool(d["center"]))
        n.center_, n.scale_ = np.array(center, dtype=np.float32), np.array(scale, dtype=np.float32)
        parts.append(n)
    return MultiNormalizer(parts)

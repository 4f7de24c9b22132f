"""The TFT around :mod:`models.dataset`: datasets, the network, and our own batches for fast inference.

Training goes through pytorch-forecasting's :class:`TimeSeriesDataSet`; inference does not: :func:`make_batch`
builds the network's input dict straight from numpy windows (one row per symbol), and :func:`run_network` calls the
module's ``forward`` under ``torch.inference_mode`` (no Lightning Trainer per call). ``tests/unit/test_tft_data.py``
and ``tests/unit/test_tft_bias.py`` check that both give the same forecasts.

Target scale (:mod:`models.targets`): the dataset holds each target divided by its scale ``s_h`` (its group's
training deviation, times the volatility ratio at the forecast's issue time when the spec has ``vol_window``) and
an identity target normaliser (pytorch-forecasting's ``standard`` one adds float16's eps, ``9.8e-4``, to the
scale: with returns of ``1e-6`` the network would see flat targets). :func:`make_batch` scales the encoder's
returns the same way (each row by the ratio of its own issue time) and passes each sample's ``s_h`` at its anchor as
its ``target_scale``, which the module's output transform multiplies back, so :func:`run_network` returns
log-returns. With volatility scaling the log of the ratio is also an input (``log_vol``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.dataset import TIME_FEATURES, FeatureSpec, long_enough, target_name, time_features
from models.targets import LOG_VOL, VOL, scale_targets, vol_lag

if TYPE_CHECKING:
    import torch

RELATIVE_TIME = "relative_time_idx"


def _horizon_quantile_loss() -> type:
    from pytorch_forecasting.metrics import QuantileLoss  # type: ignore[import-untyped]

    class HorizonQuantileLoss(QuantileLoss):  # type: ignore[misc]  # pytorch-forecasting is untyped
        """Quantile loss of one target at one decoder step only (``ret_h`` is the forward ``h``-return only at step
        ``h``). The other steps get weight 0 and this one ``T`` (the number of steps), so the mean is its loss."""

        def __init__(self, quantiles: list[float] | None = None, position: int = 0, **kwargs: Any) -> None:
            super().__init__(quantiles=quantiles, **kwargs)
            self.position = position

        def loss(self, y_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            import torch

            losses: torch.Tensor = super().loss(y_pred, target)
            steps = losses.size(1)
            weight = torch.zeros(steps, dtype=losses.dtype, device=losses.device)
            if self.position < steps:
                weight[self.position] = float(steps)
            return losses * weight.view(1, -1, 1)

    HorizonQuantileLoss.__module__ = __name__
    HorizonQuantileLoss.__qualname__ = "HorizonQuantileLoss"
    return HorizonQuantileLoss


def __getattr__(name: str) -> Any:
    # HorizonQuantileLoss subclasses a pytorch-forecasting class: it is made on first use (pickle finds it here by
    # name), so importing this module does not import torch
    if name == "HorizonQuantileLoss":
        cls = globals().get(name)  # called directly too (horizon_loss): one class per process, never a second
        if cls is None:
            cls = globals()[name] = _horizon_quantile_loss()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dataset_kwargs(spec: FeatureSpec) -> dict[str, Any]:
    from pytorch_forecasting.data import NaNLabelEncoder, TorchNormalizer  # type: ignore[import-untyped]
    from pytorch_forecasting.data.encoders import MultiNormalizer  # type: ignore[import-untyped]

    targets = list(spec.targets)
    extra = [LOG_VOL] if spec.vol_window else []
    return {
        "time_idx": "time_idx",
        "target": targets,
        "group_ids": ["series"],
        "max_encoder_length": spec.encoder_length,
        "min_encoder_length": spec.encoder_length,
        "max_prediction_length": spec.max_h,
        "min_prediction_length": spec.max_h,
        "static_categoricals": ["group"],
        "time_varying_known_reals": list(TIME_FEATURES),
        "time_varying_unknown_reals": [*targets, *spec.inputs, *extra],
        # targets are scaled per group by scale_targets; the library's "standard" would add 9.8e-4 to the scale
        "target_normalizer": MultiNormalizer([TorchNormalizer(method="identity") for _ in targets]),
        "categorical_encoders": {"group": NaNLabelEncoder(add_nan=True), "series": NaNLabelEncoder(add_nan=True)},
        # inputs are scaled by FeatureSpec already; relative_time_idx is set per sample
        "scalers": dict.fromkeys([*TIME_FEATURES, *spec.inputs, *extra, RELATIVE_TIME]),
        "add_relative_time_idx": True,
        "add_target_scales": False,
        "add_encoder_length": False,
    }


def build_datasets(prepared: pd.DataFrame, spec: FeatureSpec, val_start_idx: int | None) -> tuple[Any, Any | None]:
    """Training dataset (decoders before ``val_start_idx``) and validation dataset (decoders from it on), targets
    in units of their scale (:func:`models.targets.scale_targets`)."""
    from pytorch_forecasting import TimeSeriesDataSet  # type: ignore[import-untyped]

    prepared = scale_targets(long_enough(prepared, spec), spec)
    train_part = prepared if val_start_idx is None else prepared[prepared["time_idx"] < val_start_idx]
    train_part = long_enough(train_part, spec)
    if train_part.empty:
        raise ValueError(f"no series of at least {spec.encoder_length + spec.max_h} contiguous rows to train on")
    train_ds = TimeSeriesDataSet(train_part, **dataset_kwargs(spec))
    if val_start_idx is None:
        return train_ds, None
    val_rows = prepared[prepared["time_idx"] >= val_start_idx - spec.encoder_length]
    val_rows = long_enough(val_rows, spec)
    if val_rows.empty:
        return train_ds, None
    val_ds = TimeSeriesDataSet.from_dataset(train_ds, val_rows, min_prediction_idx=val_start_idx,
                                            stop_randomization=True)
    return train_ds, val_ds


@dataclass(frozen=True)
class NetConfig:
    hidden_size: int = 16
    attention_heads: int = 2
    hidden_continuous_size: int = 8
    lstm_layers: int = 1
    dropout: float = 0.1
    learning_rate: float = 3e-3


def horizon_loss(quantiles: Sequence[Sequence[float]], positions: Sequence[int]) -> Any:
    """The TFT's loss: one :class:`HorizonQuantileLoss` per target (its quantiles, its decoder step)."""
    from pytorch_forecasting.metrics import MultiLoss

    loss_cls = __getattr__("HorizonQuantileLoss")
    return MultiLoss([loss_cls([float(q) for q in qs], position=int(p))
                      for qs, p in zip(quantiles, positions, strict=True)])


def build_network(train_ds: Any, spec: FeatureSpec, cfg: NetConfig) -> Any:
    from pytorch_forecasting import TemporalFusionTransformer
    from torch import nn

    loss = horizon_loss([list(spec.quantiles)] * len(spec.horizons), [h - 1 for h in spec.horizons])
    with quiet_library_warnings():
        model = TemporalFusionTransformer.from_dataset(
            train_ds,
            hidden_size=cfg.hidden_size,
            attention_head_size=cfg.attention_heads,
            hidden_continuous_size=cfg.hidden_continuous_size,
            lstm_layers=cfg.lstm_layers,
            dropout=cfg.dropout,
            learning_rate=cfg.learning_rate,
            loss=loss,
            logging_metrics=nn.ModuleList([]),
            log_interval=-1,
            reduce_on_plateau_patience=1000,
        )
    model.ccf_spec = spec.to_dict()
    return model


# -- inference without the dataset ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each input goes in the network's tensors, read from a trained module."""

    reals: tuple[str, ...]
    categoricals: tuple[str, ...]
    group_codes: dict[str, int]
    target_params: tuple[tuple[float, float], ...]  # the normaliser's (center, scale) per target, spec.targets order
    target_sd: dict[int, tuple[float, ...]]  # group code -> the deviations its targets are divided by

    @classmethod
    def of(cls, model: Any, spec: FeatureSpec) -> Layout:
        hp = model.hparams
        normalizers = model.output_transformer.normalizers
        params = tuple(tuple(float(v) for v in n.get_parameters()) for n in normalizers)
        labels = {str(k): int(v) for k, v in hp.embedding_labels.get("group", {}).items()}
        sd = {code: spec.target_scales(g) for g, code in labels.items()}
        return cls(tuple(hp.x_reals), tuple(hp.x_categoricals), labels,
                   params, sd)  # type: ignore[arg-type]  # (center, scale) pairs

    def code(self, group: str) -> int | None:
        return self.group_codes.get(group)

    def target_scales(self, codes: np.ndarray, spec: FeatureSpec) -> np.ndarray:
        """``(B, len(horizons))``: each sample's target deviations (an unknown code: ``spec``'s fallback)."""
        unknown = spec.target_scales("")
        return np.array([self.target_sd.get(int(c), unknown) for c in codes], dtype=np.float64).reshape(
            len(codes), len(spec.horizons))


def make_batch(
    spec: FeatureSpec,
    layout: Layout,
    rets: np.ndarray,
    inputs: np.ndarray,
    enc_end: np.ndarray,
    codes: np.ndarray,
    vols: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The network's input dict for ``B`` samples of the last ``L`` windows each (oldest first).

    ``rets`` ``(B, L, len(horizons))``: each window's backward returns ``ret_h`` (log, unscaled); ``inputs``
    ``(B, L, k)``: scaled inputs; ``enc_end`` ``(B, L)``: window ends (ns); ``codes`` ``(B,)``: group codes;
    ``vols``: each window's volatility ratio ``(B, L)`` and ``vol_lag_h`` ``(B, L, len(horizons))``
    (:mod:`models.targets`; None: 1). A window's ``ret_h`` is divided by its group's deviation times its
    ``vol_lag_h``; a sample's ``target_scale`` is the normaliser's ``(center, scale)`` times its group's deviation
    times the ratio at its anchor (the last window): the module's output transform then gives log-returns.
    """
    import torch

    b, length = inputs.shape[0], spec.encoder_length
    h_max = spec.max_h
    enc = np.zeros((b, length, len(layout.reals)), dtype=np.float32)
    dec = np.zeros((b, h_max, len(layout.reals)), dtype=np.float32)
    col = {name: j for j, name in enumerate(layout.reals)}
    own, lags = vols if vols is not None else (np.ones((b, length)), np.ones((b, length, len(spec.horizons))))
    sd = layout.target_scales(codes, spec)  # (B, H)
    params = np.asarray(layout.target_params, dtype=np.float64)  # (H, 2)
    scales = params[None, :, :] * (sd * own[:, -1:])[:, :, None]  # (B, H, 2)
    for i, h in enumerate(spec.horizons):
        unit = rets[:, :, i] / (sd[:, i:i + 1] * lags[:, :, i])
        enc[:, :, col[target_name(h)]] = (unit - params[i, 0]) / params[i, 1]
    for j, name in enumerate(spec.inputs):
        enc[:, :, col[name]] = inputs[:, :, j]
    if LOG_VOL in col:
        enc[:, :, col[LOG_VOL]] = np.log(own)
    dec_end = enc_end[:, -1:] + spec.width_ns * np.arange(1, h_max + 1, dtype=np.int64)[None, :]
    tf_enc = time_features(enc_end.reshape(-1)).reshape(b, length, -1)
    tf_dec = time_features(dec_end.reshape(-1)).reshape(b, h_max, -1)
    for j, name in enumerate(TIME_FEATURES):
        enc[:, :, col[name]] = tf_enc[:, :, j]
        dec[:, :, col[name]] = tf_dec[:, :, j]
    if RELATIVE_TIME in col:
        rel = np.arange(-length, h_max, dtype=np.float32) / length
        enc[:, :, col[RELATIVE_TIME]] = rel[:length]
        dec[:, :, col[RELATIVE_TIME]] = rel[length:]
    cats = np.asarray(codes, dtype=np.int64)[:, None, None]
    return {
        "encoder_cat": torch.from_numpy(np.broadcast_to(cats, (b, length, len(layout.categoricals))).copy()),
        "decoder_cat": torch.from_numpy(np.broadcast_to(cats, (b, h_max, len(layout.categoricals))).copy()),
        "encoder_cont": torch.from_numpy(enc),
        "decoder_cont": torch.from_numpy(dec),
        "encoder_lengths": torch.full((b,), length, dtype=torch.long),
        "decoder_lengths": torch.full((b,), h_max, dtype=torch.long),
        "target_scale": [torch.from_numpy(scales[:, i, :].astype(np.float32)) for i in range(len(spec.horizons))],
    }


def backward_returns(mids: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """``(B, L, len(horizons))`` backward log-returns of the last ``L`` windows from ``(B, L + max_h)`` mids."""
    logmid = np.log(mids)
    h_max, length = spec.max_h, spec.encoder_length
    return np.stack([logmid[:, h_max:] - logmid[:, h_max - h: h_max - h + length] for h in spec.horizons], axis=-1)


def run_network(model: Any, batch: dict[str, Any], spec: FeatureSpec, device: str | torch.device = "cpu") -> np.ndarray:
    """``(B, len(horizons), len(quantiles))`` forecasts of the h-step log-return, quantiles sorted ascending."""
    import torch

    x = {k: ([t.to(device) for t in v] if isinstance(v, list) else v.to(device)) for k, v in batch.items()}
    with torch.inference_mode():
        out = model(x)["prediction"]
    preds = out if isinstance(out, list | tuple) else [out]
    cols = [p[:, h - 1, :] for p, h in zip(preds, spec.horizons, strict=True)]
    q = torch.stack(cols, dim=1).float().cpu().numpy()
    return np.sort(q, axis=-1)  # quantile crossing, if any, is undone by sorting


# -- many anchors at once (validation, walk-forward) ---------------------------------------------------------------
@dataclass(frozen=True)
class Anchors:
    """Forecast anchors of a prepared frame: rows with ``L - 1`` rows of their own series before them."""

    frame: pd.DataFrame  # the prepared frame, reset index
    positions: np.ndarray  # row numbers of the anchors


def anchors(prepared: pd.DataFrame, spec: FeatureSpec, min_time_idx: int | None = None) -> Anchors:
    frame = prepared.reset_index(drop=True)
    pos_in_series = frame.groupby("series", sort=False).cumcount().to_numpy()
    ok = pos_in_series >= spec.encoder_length - 1
    if min_time_idx is not None:
        ok &= frame["time_idx"].to_numpy() >= min_time_idx
    return Anchors(frame, np.flatnonzero(ok))


def realised_returns(a: Anchors, spec: FeatureSpec) -> np.ndarray:
    """``(n_anchors, len(horizons))``: the forward ``h``-return after each anchor (its row ``h`` later holds it as
    ``ret_h``), NaN where the series ends first."""
    f = a.frame
    series = f["series"].to_numpy()
    out = np.full((len(a.positions), len(spec.horizons)), np.nan)
    for j, h in enumerate(spec.horizons):
        later = a.positions + h
        ok = later < len(f)
        ok[ok] &= series[later[ok]] == series[a.positions[ok]]
        out[ok, j] = f[target_name(h)].to_numpy()[later[ok]]
    return out


def forecast_anchors(
    model: Any,
    spec: FeatureSpec,
    layout: Layout,
    a: Anchors,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``(n_anchors, len(horizons), len(quantiles))`` forecasts, batched; the same :func:`make_batch` as online."""
    f = a.frame
    rets = f[list(spec.targets)].to_numpy(np.float64)
    inputs = f[list(spec.inputs)].to_numpy(np.float32)
    ends = f["window_end"].to_numpy(np.int64)
    codes = np.array([layout.group_codes.get(g, 0) for g in f["group"]], dtype=np.int64)
    own = f[VOL].to_numpy(np.float64)
    lags = f[[vol_lag(h) for h in spec.horizons]].to_numpy(np.float64)
    out = np.zeros((len(a.positions), len(spec.horizons), len(spec.quantiles)), dtype=np.float32)
    length = spec.encoder_length
    model.eval()
    for s in range(0, len(a.positions), batch_size):
        p = a.positions[s:s + batch_size]
        span = p[:, None] + np.arange(-length + 1, 1)[None, :]
        batch = make_batch(spec, layout, rets[span], inputs[span], ends[span], codes[p], (own[span], lags[span]))
        out[s:s + len(p)] = run_network(model, batch, spec, device)
    return out


@contextmanager
def quiet_library_warnings() -> Iterator[None]:
    """Silence the library warnings we know about and cannot fix (each named), around training and dataset code."""
    with warnings.catch_warnings():
        # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        # lightning 2.6's _pytree uses torch's deprecated `isinstance(treespec, LeafSpec)`
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        # we load with num_workers=0 on purpose: the dataset is in memory and worker processes cost more than they save
        warnings.filterwarnings("ignore", message=r".*does not have many workers")
        # the last batch of an epoch is smaller; Lightning infers batch sizes from our dict batches and says so
        warnings.filterwarnings("ignore", message=r".*Trying to infer the `batch_size`")
        # without a validation window (too little data) Lightning notes that it skips the validation loop
        warnings.filterwarnings("ignore", message=r".*but have no `val_dataloader`")
        warnings.filterwarnings("ignore", message=r"ReduceLROnPlateau conditioned on metric val_loss")
        # Lightning's save_hyperparameters notes that `loss`/`logging_metrics` modules are kept as hparams; that is
        # what lets a checkpoint rebuild the same loss
        warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`")
        yield

"""The TFT's weights-and-JSON format (models/artifact.py): a round trip gives the same forecasts, and anything that is
not that format, a pickle above all, is refused without being unpickled."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.artifact import CONFIG_FILE, FORMAT, WEIGHTS_FILE, UntrustedModelError, load_model, save_model
from tests.tiny_tft import TinyTFT, evil_pickle, forecasts, kline_rows, tiny_tft

pytestmark = [
    # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]


@pytest.fixture(scope="module")
def tiny() -> TinyTFT:
    return tiny_tft(kline_rows("2025-11-01"))


@pytest.fixture
def saved(tiny: TinyTFT, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    save_model(tiny.model, tiny.spec, folder)
    return folder


def test_round_trip_gives_the_same_forecasts(tiny: TinyTFT, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((saved / CONFIG_FILE).read_text())
    assert config["format"] == FORMAT and config["hparams"]["hidden_size"] == 8
    assert config["loss"]["positions"] == [0, 4, 9, 19]
    header = (saved / WEIGHTS_FILE).read_bytes()
    (n,) = struct.unpack("<Q", header[:8])  # safetensors: a little-endian length, then that much JSON
    assert json.loads(header[8:8 + n])["__metadata__"]["format"] == FORMAT

    model, spec = load_model(saved)
    assert spec == tiny.spec and not model.training
    assert np.array_equal(forecasts(model, tiny), forecasts(tiny.model, tiny))
    a, b = model.state_dict(), tiny.model.state_dict()
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_a_pickle_format_mlflow_model_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    folder, marker = tmp_path / "model", tmp_path / "marker"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "model.pth").write_bytes(evil_pickle(marker))
    (folder / "MLmodel").write_text("flavors:\n  pytorch:\n    pickle_module_name: mlflow.pytorch.pickle_module\n")
    with pytest.raises(UntrustedModelError, match=r"not a ccf\.tft/1 model .*data/model\.pth.*never unpickled"):
        load_model(folder)
    assert not marker.exists()


def test_a_pickle_in_place_of_the_weights_is_refused(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    (saved / WEIGHTS_FILE).write_bytes(evil_pickle(marker))
    with pytest.raises(UntrustedModelError, match="not the weights of this network"):
        load_model(saved)
    assert not marker.exists()


def _edit(saved: Path, change: Any) -> None:
    config = json.loads((saved / CONFIG_FILE).read_text())
    change(config)
    (saved / CONFIG_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize(("change", "says"), [
    (lambda c: c.update(format="mlflow.pytorch"), "format 'mlflow.pytorch'"),
    (lambda c: c["hparams"].update(loss={"py/object": "os.system"}), r"unknown hyperparameters \['loss'\]"),
    (lambda c: c["hparams"].update(callback="x"), r"unknown hyperparameters \['callback'\]"),
    (lambda c: c["target_normalizers"][0].update(scale_=0.0), "scale 0.0 cannot be used"),
    (lambda c: c["target_normalizers"][0].update(transformation="log"), "needs exactly"),
    (lambda c: c.pop("spec"), "KeyError"),
    (lambda c: c["hparams"].update(x_reals=["nothing"]), r"missing reals \['dow_cos'"),
    (lambda c: c["spec"].update(groups=["okx:BTC-USDT"]), r"groups without a label \['okx:BTC-USDT'\]"),
    (lambda c: c["hparams"].update(output_size="three"), "does not describe a TFT"),
], ids=["format", "loss-object", "unknown-hparam", "zero-scale", "transformation", "no-spec", "x-reals", "groups", "output-size"])
def test_json_that_does_not_describe_our_tft_is_refused(saved: Path, change: Any, says: str) -> None:
    _edit(saved, change)
    with pytest.raises(UntrustedModelError, match=says):
        load_model(saved)


def test_weights_of_another_network_are_refused(tiny: TinyTFT, saved: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    save_model(tiny_tft(kline_rows("2025-11-01"), hidden_size=12).model, tiny.spec, other)
    shutil.copy(other / WEIGHTS_FILE, saved / WEIGHTS_FILE)
    with pytest.raises(UntrustedModelError, match="size mismatch"):
        load_model(saved)


def test_missing_files_are_refused(saved: Path) -> None:
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(UntrustedModelError, match=r"it holds \['tft\.json'\]"):
        load_model(saved)


def test_only_our_loss_and_plain_normalisers_are_saved(tiny: TinyTFT, tmp_path: Path) -> None:
    from pytorch_forecasting.metrics import QuantileLoss

    model = tiny_tft(kline_rows("2025-11-01")).model
    model.loss = QuantileLoss([0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="only a MultiLoss of HorizonQuantileLoss"):
        save_model(model, tiny.spec, tmp_path / "m")

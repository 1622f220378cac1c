"""Keras-applications bases: imported once against a pinned hash, then used like the default."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import pytest
from stl_testing import FAST, run_stl, small_dataset

from model.bases.registry import import_base
from model.errors import BaseModelError, InvalidRequest
from store import LocalStore


def _legacy_h5(path: Path) -> Path:
    """A structurally real MobileNetV2 no-top weight file in Keras' legacy HDF5 layout (random weights)."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    from model.bases.quantize import fresh_keras

    keras = fresh_keras()

    model = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(96, 96, 3), pooling="avg"
    )
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)
    return path


def test_efficientnet_b0_is_checked_against_keras_md5(tmp_path: Path) -> None:
    fake = tmp_path / "efficientnetb0_notop.h5"
    fake.write_bytes(b"\x89HDF\r\n\x1a\nnot the real weights")
    with pytest.raises(
        BaseModelError, match="but efficientnet-b0 is pinned to 50bc09e76180e00e4465e1a485ddc09d"
    ):
        import_base(LocalStore(tmp_path / "d"), "efficientnet-b0", fake)


def test_mobilenet_v2_needs_a_pin_and_must_match_it(tmp_path: Path) -> None:
    f = tmp_path / "w.h5"
    f.write_bytes(b"\x89HDF\r\n\x1a\nx")
    store = LocalStore(tmp_path / "d")
    with pytest.raises(InvalidRequest, match="pin the file with --sha256"):
        import_base(store, "mobilenet-v2", f)
    with pytest.raises(BaseModelError, match="but you pinned"):
        import_base(store, "mobilenet-v2", f, "0" * 64)


def test_imported_mobilenet_v2_trains_and_enters_the_recipe(tmp_path: Path) -> None:
    weights = _legacy_h5(tmp_path / "mobilenet_v2_no_top.h5")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    data = tmp_path / "data"
    imported = run_stl(["base", "import", str(weights), "--base", "mobilenet-v2", "--sha256", digest], data)
    assert imported.code == 0, imported.err
    csv = small_dataset(tmp_path / "set")
    run = run_stl(["train", str(csv), *FAST, "--base", "mobilenet-v2"], data)
    assert run.code == 0, run.err
    assert run.json["status"] == "ready"
    assert run.json["base_sha1"] == imported.json["weights_sha1"]
    default = run_stl(["train", str(csv), *FAST], data)
    assert default.json["model_sha1"] != run.json["model_sha1"]

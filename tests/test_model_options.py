"""The recipe options of the better-models work, end to end through `stl`: views, a second base,
the logistic head's validation from its folds, and what the manifest says about a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stl_testing import EXAMPLE, run_stl, small_dataset

from model.config import Settings
from model.identity.manifest import manifest_rows
from model.identity.tensors import load_tensors
from model.inference.predictor import Predictor
from store import LocalStore

#: Small and quick: the Lite0 base at 96 px, a fixed L2 (no grid search).
QUICK = ["--base", "efficientnet-lite0", "--image-size", "96", "--l2", "0.01"]


def _manifest(data: Path, model_sha1: str) -> dict:
    store = LocalStore(data)
    return json.loads(store.get(store.get_ref(f"models/{model_sha1}/manifest").decode()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("images"), per_label=6)


def test_crop_views_are_cached_and_recorded(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run_stl(["train", str(dataset), *QUICK, "--views", "original,center,bottom-left"], data)
    assert first.code == 0, first.err[-2000:]
    manifest = _manifest(data, first.json["model_sha1"])
    assert manifest["recipe"]["views"] == ["original", "center", "bottom-left"]
    image = next(manifest_rows(LocalStore(data), manifest))
    assert len(image["features_sha1"]) == 3 and len(set(image["features_sha1"])) == 3
    assert image["crop_tensor_sha1"] != image["tensor_sha1"]  # cut from the image squashed to 110 px
    assert load_tensors(LocalStore(data).get(image["crop_tensor_sha1"]))["image"].shape == (110, 110, 3)
    # Another seed: every feature comes from the cache, none from the base network.
    again = run_stl(
        ["train", str(dataset), *QUICK, "--views", "original,center,bottom-left", "--seed", "9"], data
    )
    assert again.code == 0, again.err[-2000:]
    runs = LocalStore(data).list_refs(f"models/{again.json['model_sha1']}/runs")
    record = json.loads(LocalStore(data).get(LocalStore(data).get_ref(runs[0]).decode()))
    assert record["cache"]["base_forward"] == 0 and record["cache"]["feature_cache_hits"] == 18 * 3


def test_a_second_base_appends_its_features_and_verifies(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = run_stl(
        ["train", str(dataset), *QUICK, "--views", "original", "--extra-base", "efficientnet-lite1"], data
    )
    assert run.code == 0, run.err[-2000:]
    manifest = _manifest(data, run.json["model_sha1"])
    assert manifest["inputs"]["extra_base"]["name"] == "efficientnet-lite1"
    assert manifest["outputs"]["weights"]["tensors"]["kernel"] == [2560, 3]  # 1280 + 1280 features
    assert len(next(manifest_rows(LocalStore(data), manifest))["features_sha1"]) == 2
    verify = run_stl(["verify", run.json["model_sha1"]], data)
    assert verify.code == 0 and verify.json["identical"], verify.out + verify.err[-2000:]


def test_every_photo_trains_and_the_folds_validate(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = run_stl(["train", str(dataset), *QUICK], data)
    assert run.code == 0, run.err[-2000:]
    metrics = _manifest(data, run.json["model_sha1"])["metrics"]
    assert metrics["train_images"] == 18 and metrics["validation_images"] == 0
    assert metrics["validation_source"] == "5-fold cross-validation on the training photos"
    assert sum(map(sum, metrics["confusion_matrix"])) == 18  # every photo judged once, by its fold
    assert set(metrics["per_label"]) == {"checks", "dots", "stripes"}
    assert 0 <= metrics["expected_calibration_error"] <= 1
    training = _manifest(data, run.json["model_sha1"])["training"]
    assert training["converged"] and training["temperature"] > 0


def test_a_holdout_split_still_validates_by_holdout(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = run_stl(["train", str(dataset), *QUICK, "--train-percentage", "50", "--no-calibrate"], data)
    assert run.code == 0, run.err[-2000:]
    manifest = _manifest(data, run.json["model_sha1"])
    assert manifest["metrics"]["validation_source"] == "holdout split"
    assert manifest["metrics"]["validation_images"] == 9
    assert manifest["training"]["temperature"] == 1.0


def test_the_adam_head_refuses_a_full_split_with_one_line(dataset: Path, tmp_path: Path) -> None:
    run = run_stl(
        ["train", str(dataset), *QUICK, "--head", "adam", "--train-percentage", "100"], tmp_path / "d"
    )
    assert run.code == 2
    assert (
        run.error_line
        == "stl: error: train_percentage 100 needs head logistic (its folds give the validation metrics)"
    )


def test_a_batch_of_images_is_labelled_as_each_alone(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = run_stl(
        [
            "train",
            str(dataset),
            *QUICK,
            "--views",
            "mirrored,top-right",
            "--extra-base",
            "efficientnet-lite1",
        ],
        data,
    )
    assert run.code == 0, run.err[-2000:]
    predictor = Predictor(LocalStore(data), Settings())
    images = [(EXAMPLE / "infer" / f"{n}.png").read_bytes() for n in ("checks", "dots", "stripes")]
    batch = predictor.predict(run.json["model_sha1"], images)
    alone = [predictor.predict(run.json["model_sha1"], [image])[0] for image in images]
    assert len(batch) == 3 and batch == alone
    assert [max(p, key=p.get) for p in batch] == ["checks", "dots", "stripes"]
    assert all(abs(sum(p.values()) - 1) < 1e-12 for p in batch)
    np.testing.assert_array_less(0, [min(p.values()) for p in batch])


def test_the_adam_head_still_trains_and_chooses_l2_by_its_folds(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = run_stl(
        ["train", str(dataset), "--base", "efficientnet-lite0", "--image-size", "96", "--views", "original",
         "--head", "adam", "--epochs", "3", "--l2", "-1"],
        data,
    )  # fmt: skip
    assert run.code == 0, run.err[-2000:]
    manifest = _manifest(data, run.json["model_sha1"])
    assert (manifest["recipe"]["head"], manifest["recipe"]["train_percentage"]) == ("adam", 80)
    assert set(manifest["metrics"]["l2_cross_validation_accuracy"]) == {"0.0001", "0.001", "0.01", "0.1"}
    assert manifest["metrics"]["validation_source"] == "holdout split"
    assert "temperature" not in load_tensors(LocalStore(data).get(run.json["weights_sha1"]))

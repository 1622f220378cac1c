"""Determinism is a tested property: same recipe -> same bytes, across processes and core counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from stl_testing import EXAMPLE, FAST, run_stl, small_dataset

from model.config import Settings
from model.context import Context
from model.data.fetch import FetchPolicy
from model.training.pipeline import prepare_recipe, train_model
from store import LocalStore


def test_two_processes_two_stores_one_core_vs_all_cores_same_model_bytes(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else None
    a = run_stl(["train", str(csv), *FAST, "--flip"], tmp_path / "a")
    b = run_stl(["train", str(csv), *FAST, "--flip"], tmp_path / "b", prefix=prefix)
    assert a.code == 0 and b.code == 0, a.err + b.err
    ra, rb = a.json, b.json
    assert ra["model_sha1"] == rb["model_sha1"]
    assert ra["weights_sha1"] == rb["weights_sha1"]
    assert ra["manifest_sha1"] == rb["manifest_sha1"]
    wa = LocalStore(tmp_path / "a").get(ra["weights_sha1"])
    wb = LocalStore(tmp_path / "b").get(rb["weights_sha1"])
    assert wa == wb


def test_retrain_with_new_seed_reuses_tensors_and_features(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    settings = Settings()
    policy = FetchPolicy()
    params = {"l2": 0.001, "image_size": 96}
    ctx = Context(settings, store, policy)
    first = train_model(ctx, prepare_recipe(ctx, params, str(csv), None), str(csv))
    # The default views, mirrored and centre crop: two decoded sizes and two base runs per image.
    assert first["cache"]["decoded"] == 24 and first["cache"]["base_forward"] == 24
    r2 = prepare_recipe(ctx, {**params, "random_seed": 7}, str(csv), None)
    second = train_model(ctx, r2, str(csv))
    assert second["cache"] == {
        "decoded": 0,
        "tensor_cache_hits": 0,
        "base_forward": 0,
        "feature_cache_hits": 24,
    }
    assert second["manifest_sha1"] != first["manifest_sha1"]


def test_cached_and_fresh_features_give_the_same_model(tmp_path: Path) -> None:
    """A store warmed by a different CSV (other batch-mates) must not change a model's bits."""
    csv = small_dataset(tmp_path / "set")
    settings, policy = Settings(), FetchPolicy()
    params = {"l2": 0.001, "image_size": 96}
    fresh = LocalStore(tmp_path / "fresh")
    fresh_ctx = Context(settings, fresh, policy)
    out_fresh = train_model(fresh_ctx, prepare_recipe(fresh_ctx, params, str(csv), None), str(csv))
    warm = LocalStore(tmp_path / "warm")
    other = tmp_path / "set" / "reversed.csv"
    other.write_text("".join(reversed(csv.read_text().splitlines(keepends=True))))
    warm_ctx = Context(settings, warm, policy)
    train_model(warm_ctx, prepare_recipe(warm_ctx, params, str(other), None), str(other))
    out_warm = train_model(warm_ctx, prepare_recipe(warm_ctx, params, str(csv), None), str(csv))
    assert out_warm["cache"]["base_forward"] == 0
    assert out_warm["weights_sha1"] == out_fresh["weights_sha1"]


@pytest.mark.parametrize("name", ["dots", "stripes"])
def test_inference_is_repeatable(tmp_path: Path, name: str) -> None:
    csv = small_dataset(tmp_path / "set")
    data = tmp_path / "data"
    model = run_stl(["train", str(csv), *FAST], data).json["model_sha1"]
    image = str(EXAMPLE / "infer" / f"{name}.png")
    one = run_stl(["infer", "--model", model, image], data)
    two = run_stl(["infer", "--model", model, image], data)
    assert one.out == two.out and one.code == 0

"""model.uri: a model trained here is published elsewhere and served from there by hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stl_testing import EXAMPLE, FAST, run_stl, small_dataset

from model.errors import ModelNotFound
from model.identity.manifest import manifest_ref
from model.lifecycle.publish import ensure_model
from store import HashMismatch, LocalStore


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("pub")
    csv = small_dataset(tmp / "set")
    remote = tmp / "remote"
    run = run_stl(["train", str(csv), *FAST, "--publish", str(remote)], tmp / "here")
    assert run.code == 0, run.err
    assert run.json["published"]["uri"] == str(remote)
    return tmp, remote, run.json["model_sha1"]


def test_another_machine_serves_the_model_fetched_by_hash(published: tuple[Path, Path, str]) -> None:
    tmp, remote, model = published
    elsewhere = tmp / "elsewhere"
    image = str(EXAMPLE / "infer" / "dots.png")
    missing = run_stl(["infer", "--model", model, image], elsewhere)
    assert missing.code == 1 and missing.error_line == (  # nothing here yet: no store was made
        f"stl: error: no store at {elsewhere}: nothing was trained there (--store, STORE_URI or DATA_DIR name another)"
    )
    fetched = run_stl(["infer", "--model", model, "--model-uri", str(remote), image], elsewhere)
    assert fetched.code == 0, fetched.err
    here = run_stl(["infer", "--model", model, image], tmp / "here")
    assert json.loads(fetched.out) == json.loads(here.out)


def test_a_tampered_remote_is_an_error_never_a_silent_load(
    published: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _tmp, remote, model = published
    rstore = LocalStore(remote)
    manifest = json.loads(rstore.get(rstore.get_ref(manifest_ref(model)).decode()))
    weights = rstore.object_path(manifest["outputs"]["weights"]["sha1"])
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-4] + b"\0\0\0\0")
        with pytest.raises(HashMismatch):
            ensure_model(LocalStore(tmp_path / "victim"), model, str(remote), str(tmp_path / "victim"))
        assert LocalStore(tmp_path / "victim").get_ref(manifest_ref(model)) is None
    finally:
        weights.write_bytes(original)


def test_a_manifest_for_another_recipe_is_refused(published: tuple[Path, Path, str], tmp_path: Path) -> None:
    _tmp, remote, model = published
    liar = LocalStore(tmp_path / "liar")
    other = "e" * 40
    liar.set_ref(manifest_ref(other), LocalStore(remote).get_ref(manifest_ref(model)))
    liar.put(LocalStore(remote).get(LocalStore(remote).get_ref(manifest_ref(model)).decode()))
    with pytest.raises(HashMismatch):
        ensure_model(LocalStore(tmp_path / "victim"), other, str(tmp_path / "liar"), str(tmp_path / "victim"))
    with pytest.raises(ModelNotFound):
        ensure_model(LocalStore(tmp_path / "victim"), other, None, str(tmp_path / "victim"))


def test_a_model_published_into_a_store_is_listed_by_the_api_the_cli_and_the_page(
    published: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote holds the manifest and objects, no job record: GET /models used to skip it."""
    from handlers import app as app_module
    from model.config import Settings

    _tmp, remote, model = published
    monkeypatch.setattr(app_module, "start_resumer", lambda _svc: None)
    client = app_module.create_app(Settings(data_dir=str(remote), preload_base=False)).test_client()
    assert client.get("/models").get_json()["models"] == [{"model_sha1": model, "status": "ready"}]
    assert client.get(f"/models/{model}").get_json()["status"] == "ready"
    listed = run_stl(["models"], remote)
    assert listed.code == 0 and model in listed.out
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'stl_jobs{status="ready"} 1.0' in metrics

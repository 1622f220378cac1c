"""The exported .tflite runs in LiteRT and labels like the service; the Python API is the CLI's.

The export is read back with LiteRT's own interpreter (not our code), fed the images
as its metadata says: each squashed to the input's size by our deterministic decoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stl_testing import EXAMPLE, REPO, run_stl

from model import api
from model.data.images import decode_image
from model.inference.predictor import top_label
from model.lifecycle.export import export_bytes
from store import LocalStore
from store.hashing import sha1_bytes

#: PNGs from the example set and JPEGs (baseline and progressive): every decoder users' data takes.
IMAGES = [
    *sorted((EXAMPLE / "infer").glob("*.png")),
    REPO / "tests" / "data" / "rocket.jpg",
    REPO / "tests" / "data" / "coffee-progressive.jpg",
]
#: Lite0 at 96 px keeps the test quick; the views cover both inputs, the flip and a crop.
RECIPE = {"base": "efficientnet-lite0", "image_size": 96, "views": ["original", "mirrored", "center"]}
#: The bytes of that model's export: the graph writer is deterministic and the model is golden.
GOLDEN_EXPORT_SHA1 = "abc7f726f972d0ad2c69251d9a222ef808134aef"


def run_tflite(data: bytes, images: list[Path]) -> tuple[dict, list[np.ndarray]]:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    meta = json.loads(bytes(model.buffers[next(m.buffer for m in model.metadata if m.name == b"stl")].data))
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    output = interpreter.get_output_details()[0]
    results = []
    for path in images:
        for spec in meta["inputs"]:
            side = spec["shape"][1]
            pixels = decode_image(path.read_bytes(), side, 40_000_000, path.name)[None]
            interpreter.set_tensor(inputs[spec["name"]]["index"], pixels)
        interpreter.invoke()
        results.append(interpreter.get_tensor(output["index"])[0].copy())
    return meta, results


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, api.Model]:
    store = LocalStore(tmp_path_factory.mktemp("export") / "data")
    return store, api.train(str(EXAMPLE / "train.csv"), store=store, **RECIPE)


def test_the_exported_file_labels_like_the_service(trained: tuple[LocalStore, api.Model]) -> None:
    store, model = trained
    data = export_bytes(store, model.sha1)
    meta, outputs = run_tflite(data, IMAGES)
    assert meta["model_sha1"] == model.sha1 and meta["labels"] == model.labels
    assert meta["views"] == RECIPE["views"]
    assert [i["shape"] for i in meta["inputs"]] == [[1, 96, 96, 3], [1, 110, 110, 3]]
    service = model.predict([str(p) for p in IMAGES])
    for path, got, want in zip(IMAGES, outputs, service, strict=True):
        expected = np.array([want[label] for label in model.labels])
        assert model.labels[int(np.argmax(got))] == top_label(want), path.name
        # The head runs in float32 in LiteRT, the service's in float64: close, not identical.
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=path.name)
    assert [top_label(p) for p in service[:3]] == ["checks", "dots", "stripes"]
    assert sha1_bytes(data) == GOLDEN_EXPORT_SHA1


def test_stl_export_writes_the_same_file(trained: tuple[LocalStore, api.Model], tmp_path: Path) -> None:
    store, model = trained
    out = tmp_path / "model.tflite"
    run = run_stl(["export", model.sha1, "-o", str(out)], store.transport.root)  # type: ignore[attr-defined]
    assert run.code == 0, run.err
    assert run.json == {
        "format": "tflite",
        "model_sha1": model.sha1,
        "path": str(out),
        "sha1": sha1_bytes(out.read_bytes()),
    }
    assert out.read_bytes() == export_bytes(store, model.sha1)
    assert out.stat().st_mode & 0o777 == 0o644  # a file to hand on: others may read it
    bad = run_stl(["export", "f" * 40, "-o", str(tmp_path / "x.tflite")], store.transport.root)  # type: ignore[attr-defined]
    assert bad.code == 1 and bad.err.strip() == (
        f"stl: error: unknown model {'f' * 40} in the store at {store.transport.root} (DATA_DIR, or ./data)"  # type: ignore[attr-defined]
    )
    assert not (tmp_path / "x.tflite").exists()


def test_a_two_base_model_exports_with_both_bases(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    recipe = {
        "base": "efficientnet-lite0",
        "extra_base": "efficientnet-lite1",
        "image_size": 64,
        "views": ["original"],
    }
    model = api.train(str(EXAMPLE / "train.csv"), store=store, **recipe)
    meta, outputs = run_tflite(export_bytes(store, model.sha1), IMAGES[:3])
    assert [b["name"] for b in meta["bases"]] == ["efficientnet-lite0", "efficientnet-lite1"]
    service = model.predict([str(p) for p in IMAGES[:3]])
    for got, want in zip(outputs, service, strict=True):
        np.testing.assert_allclose(got, [want[label] for label in model.labels], atol=2e-5)


def test_the_python_api_gives_the_cli_model_and_probabilities(
    trained: tuple[LocalStore, api.Model], tmp_path: Path
) -> None:
    store, model = trained
    cli = run_stl(
        ["train", str(EXAMPLE / "train.csv"), "--base", "efficientnet-lite0", "--image-size", "96",
         "--views", "original,mirrored,center"],
        tmp_path / "cli",
    )  # fmt: skip
    assert cli.code == 0, cli.err
    assert cli.json["model_sha1"] == model.sha1
    assert cli.json["manifest_sha1"] == (store.get_ref(f"models/{model.sha1}/manifest") or b"").decode()
    infer = run_stl(["infer", "--model", model.sha1, str(IMAGES[1])], tmp_path / "cli")
    assert infer.code == 0, infer.err
    assert json.loads(infer.out)["probabilities"] == model.predict([IMAGES[1].read_bytes()])[0]
    assert [m["model_sha1"] for m in api.models(store=store)] == [model.sha1]
    assert api.load(model.sha1, store=store).validation_accuracy == model.validation_accuracy
    report = api.verify(model.sha1, store=store)
    assert report["identical"] is True, report

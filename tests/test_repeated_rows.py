"""A CSV that lists images many times: each image is fetched and run through the base once, the head
weighs each (image, label) pair by its rows, and the manifest stays small while its row table
keeps every row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stl_testing import EXAMPLE, run_stl

from store import LocalStore

CHEAP = ["--base", "efficientnet-lite0", "--image-size", "96", "--views", "original", "--seed", "1"]
#: The example CSV listed three times over (216 rows).
GOLDEN = {
    "weights_sha1": "45be40eb0432503f35b87a9f0098ef3f7eea65af",
    "manifest_sha1": "cffa1ab63a3bdc04982f92ed474e312caaaa82b0",
}


def test_repeated_rows_train_once_per_image_and_keep_every_row(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE / "images", tmp_path / "images")
    table = tmp_path / "thrice.csv"
    table.write_text((EXAMPLE / "train.csv").read_text() * 3)
    data = tmp_path / "data"
    run = run_stl(["train", str(table), *CHEAP], data)
    assert run.code == 0, run.err[-2000:]
    assert {k: run.json[k] for k in GOLDEN} == GOLDEN
    store = LocalStore(data)
    manifest = json.loads(store.get(run.json["manifest_sha1"]))
    assert manifest["inputs"]["rows"]["rows"] == 216 and manifest["inputs"]["rows"]["images"] == 72
    assert len(store.get(run.json["manifest_sha1"])) < 8_000  # no per-row entries in the manifest
    lines = store.get(manifest["inputs"]["rows"]["sha1"]).decode().splitlines()
    assert [json.loads(line)["line"] for line in lines] == list(range(1, 217))
    assert manifest["metrics"]["train_images"] == 216  # metrics count rows, as the CSV lists them
    (name,) = store.list_refs(f"models/{manifest['model_sha1']}/runs")
    record = json.loads(store.get(store.get_ref(name).decode()))  # type: ignore[union-attr]
    assert record["cache"]["base_forward"] == 72  # one forward pass per distinct image


def test_a_label_whose_rows_are_one_photo_is_a_permanent_one_line_error(tmp_path: Path) -> None:
    """Issue 44, defect 4: each label's photos copies of one picture crashed the head's folds
    (ZeroDivisionError, marked transient, so every poll restarted it)."""
    for label, picture in (("cats", "checks/000.png"), ("dogs", "dots/000.png")):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for name in ("1.png", "2.png", "3.png"):
            shutil.copyfile(EXAMPLE / "images" / picture, tmp_path / "photos" / label / name)
    shutil.copyfile(EXAMPLE / "images" / "dots/001.png", tmp_path / "photos" / "dogs" / "4.png")
    run = run_stl(["train", str(tmp_path / "photos"), *CHEAP], tmp_path / "data")
    assert run.code == 1
    message = "label 'cats' has 3 rows but 1 distinct photo: a classifier needs at least 2 different photos per label"
    assert run.err.strip().splitlines()[-1] == f"stl: error: {message}"
    assert run.json["status"] == "error" and run.json["error_kind"] == "permanent"
    assert run.json["message"] == message

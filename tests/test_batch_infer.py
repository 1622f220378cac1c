"""Labelling a CSV of images: in order, one line per row, the same probabilities as one by one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from stl_testing import EXAMPLE, REPO, run_stl

from model import api
from model.data.csvfile import ImageRow, parse_image_list
from model.errors import CsvError
from store.hashing import sha1_bytes

RECIPE = {"base": "efficientnet-lite0", "image_size": 96}


def test_parse_image_list_takes_every_row_form() -> None:
    sha1 = "a" * 40
    text = f"x.png\ny.png,dots\nz.png,{sha1}\nw.png,stripes,{sha1.upper()}\n\n"
    assert list(parse_image_list(text.encode(), 10)) == [
        ImageRow(1, "x.png"),
        ImageRow(2, "y.png", "dots"),
        ImageRow(3, "z.png", None, sha1),
        ImageRow(4, "w.png", "stripes", sha1),
    ]
    with pytest.raises(CsvError, match="CSV line 1: 'nope' is not a sha1"):
        list(parse_image_list(b"x.png,dots,nope\n", 10))
    with pytest.raises(CsvError, match="more than 2 rows"):
        list(parse_image_list(b"a\nb\nc\n", 2))


def test_stl_infer_csv_labels_a_batch_like_one_by_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model = api.train(str(EXAMPLE / "train.csv"), store=str(data), **RECIPE)
    site = tmp_path / "images"
    site.mkdir()
    pictures = [
        *sorted((EXAMPLE / "infer").glob("*.png")),
        EXAMPLE / "images" / "checks" / "023.png",
        REPO / "tests" / "data" / "rocket.jpg",
        REPO / "tests" / "data" / "coffee-progressive.jpg",
    ]
    for p in pictures:
        shutil.copy(p, site / p.name)
    (site / "broken.png").write_bytes(b"not an image at all")
    dots = (site / "dots.png").read_bytes()
    rows = [
        "checks.png,checks",
        f"dots.png,dots,{sha1_bytes(dots)}",
        "stripes.png,stripes",
        "023.png",
        "broken.png,checks",
        "rocket.jpg",
        f"coffee-progressive.jpg,{'0' * 40}",  # the wrong sha1: this row fails, the others go on
        "coffee-progressive.jpg",
    ]
    (site / "list.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "results.jsonl"
    run = run_stl(["infer", "--model", model.sha1, "--csv", str(site / "list.csv"), "--out", str(out)], data)
    assert run.code == 1, run.err
    assert "stl: 3 of 3 labelled as the CSV says (100.0%)" in run.err
    assert "stl: error: 2 of 8 images could not be labelled; see their error lines" in run.err
    assert "label:   0%|          | 0/8 " in run.err  # the bar knows the CSV's total from the start
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in results] == list(range(1, 9))
    assert (
        results[4]["error"] == "CSV line 5 (broken.png): not a decodable image"
        or "broken.png" in results[4]["error"]
    )
    assert results[6]["error"].startswith("sha1 mismatch for ")
    assert [r.get("label") for r in results[:4]] == ["checks", "dots", "stripes", "checks"]
    # Each good row's probabilities are those of `stl infer` on that image alone.
    for row, result in zip(rows, results, strict=True):
        if "error" in result:
            continue
        alone = run_stl(["infer", "--model", model.sha1, str(site / row.split(",")[0])], data)
        assert alone.code == 0, alone.err
        assert json.loads(alone.out)["probabilities"] == result["probabilities"], row
    # The Python API streams the same records.
    assert list(model.label_csv(str(site / "list.csv"))) == results


def test_stl_infer_usage_errors(tmp_path: Path) -> None:
    both = run_stl(["infer", "--model", "a" * 40, "--csv", "x.csv", "y.png"], tmp_path / "d")
    assert both.code == 2 and both.err.strip() == "stl: error: give images or --csv, not both"
    none = run_stl(["infer", "--model", "a" * 40], tmp_path / "d")
    assert none.code == 2 and none.err.strip() == "stl: error: give one or more images, or --csv"
    out = run_stl(["infer", "--model", "a" * 40, "y.png", "--out", "r.jsonl"], tmp_path / "d")
    assert out.code == 2 and out.err.strip() == "stl: error: --out goes with --csv"

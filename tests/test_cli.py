"""`stl` end to end, in real processes, against a real HTTP server."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from stl_testing import EXAMPLE, FAST, FileServer, run_stl, sha1_of, small_dataset

from model.identity.manifest import manifest_ref
from model.jobs import state as jobs
from store import LocalStore


def _assert_nothing_half_written(data_dir: Path, model_sha1: str) -> None:
    store = LocalStore(data_dir)
    assert store.get_ref(manifest_ref(model_sha1)) is None, "a failed run must not publish a manifest"
    assert not list((data_dir / "tmp").glob("obj-*")), "staging files left behind"
    for sha1 in store.list_objects():
        store.get(sha1)  # every visible object is whole: it verifies


def test_train_infer_show_verify_over_http(tmp_path: Path, file_server: FileServer) -> None:
    small_dataset(file_server.root)
    data = tmp_path / "data"
    run = run_stl(["train", f"{file_server.url}/train.csv", *FAST], data)
    assert run.code == 0, run.err
    result = run.json
    assert result["status"] == "ready"
    model = result["model_sha1"]

    again = run_stl(["train", f"{file_server.url}/train.csv", *FAST], data)
    assert again.json["model_sha1"] == model and again.json["weights_sha1"] == result["weights_sha1"]

    infer = run_stl(
        [
            "infer",
            "--model",
            model,
            str(EXAMPLE / "infer" / "dots.png"),
            str(EXAMPLE / "infer" / "checks.png"),
        ],
        data,
    )
    assert infer.code == 0, infer.err
    answers = [json.loads(line) for line in infer.out.splitlines()]
    assert len(answers) == 2
    for a in answers:
        assert set(a["probabilities"]) == {"checks", "dots", "stripes"}
        assert abs(sum(a["probabilities"].values()) - 1) < 1e-5

    shown = json.loads(run_stl(["show", model], data).out)
    assert shown["model_sha1"] == model and shown["outputs"]["weights"]["sha1"] == result["weights_sha1"]
    assert shown["labels"] == ["checks", "dots", "stripes"]
    # The rows are in a table of their own, one JSON line per CSV row, linked by hash.
    assert (shown["inputs"]["rows"]["rows"], shown["inputs"]["rows"]["images"]) == (12, 12)
    rows = LocalStore(data).get(shown["inputs"]["rows"]["sha1"]).decode().splitlines()
    assert len(rows) == 12 and {json.loads(r)["split"] for r in rows} <= {"train", "validation"}

    verify = run_stl(["verify", model], data)
    assert verify.code == 0, verify.err
    assert verify.json["identical"] is True


def _bad_csv_run(tmp_path: Path, file_server: FileServer, mutate, env: dict | None = None) -> tuple:
    csv = small_dataset(file_server.root)
    mutate(file_server.root, csv)
    data = tmp_path / "data"
    run = run_stl(["train", f"{file_server.url}/train.csv", *FAST], data, env=env)
    return run, data


def _replace_image(root: Path, csv: Path, payload: bytes, fix_sha1: bool = True) -> None:
    target = root / "dots" / "001.png"
    target.write_bytes(payload)
    if fix_sha1:
        lines = csv.read_text().splitlines()
        lines = [
            f"dots/001.png,dots,{sha1_of(payload)}" if ln.startswith("dots/001.png") else ln for ln in lines
        ]
        csv.write_text("\n".join(lines) + "\n")


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


BAD_INPUTS = {
    "http_error": (
        lambda root, csv: (root / "dots" / "001.png").unlink(),
        None,
        r"HTTP 404 fetching http://127\.0\.0\.1:\d+/dots/001\.png",
    ),
    "sha1_mismatch": (
        lambda root, csv: _replace_image(root, csv, _png((20, 20)), fix_sha1=False),
        None,
        r"1 image\(s\) do not match their CSV sha1: line \d+ \(dots/001\.png\) has sha1 [0-9a-f]{40}, CSV says [0-9a-f]{40}",
    ),
    "not_an_image": (
        lambda root, csv: _replace_image(root, csv, b"this is not an image"),
        None,
        r"CSV line \d+ \(dots/001\.png\) is not a decodable image",
    ),
    "truncated_image": (
        lambda root, csv: _replace_image(root, csv, (EXAMPLE / "images/dots/001.png").read_bytes()[:900]),
        None,
        r"CSV line \d+ \(dots/001\.png\) is a truncated image",
    ),
    "pixel_limit": (
        lambda root, csv: _replace_image(root, csv, _png((3000, 3000))),
        {"MAX_IMAGE_PIXELS": "1000000"},
        r"CSV line \d+ \(dots/001\.png\) is 3000x3000 pixels, over the limit of 1000000",
    ),
    "malformed_row": (
        lambda root, csv: csv.write_text(csv.read_text() + "just-a-path.png\n"),
        None,
        r"CSV line 13: expected 3 fields <image_url>,<label>,<sha1>, got 1",
    ),
    "one_label": (
        lambda root, csv: csv.write_text(
            "\n".join(ln for ln in csv.read_text().splitlines() if ",dots," in ln) + "\n"
        ),
        None,
        r"CSV needs at least 2 labels to train a classifier, got 1",
    ),
    "too_few_to_split": (
        lambda root, csv: csv.write_text(
            "\n".join(
                ln for ln in csv.read_text().splitlines() if ",dots," not in ln or ln.startswith("dots/000")
            )
            + "\n"
        ),
        None,
        r"label 'dots' has 1 image\(s\); at least 2 are needed to split",
    ),
}


#: Cases whose fault is in the CSV's own text: found when the request is read, not by a job.
CSV_REFUSED = {"malformed_row", "one_label"}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_with_one_line_and_an_error_status(
    case: str, tmp_path: Path, file_server: FileServer
) -> None:
    mutate, env, pattern = BAD_INPUTS[case]
    run, data = _bad_csv_run(tmp_path, file_server, mutate, env)
    assert run.code != 0
    assert "Traceback" not in run.err
    assert run.error_line.startswith("stl: error: ")
    assert re.search(pattern, run.error_line), run.error_line
    if case in CSV_REFUSED:  # the CSV itself cannot train: refused before any job is recorded
        assert run.out.strip() == "" and LocalStore(data).list_refs("models") == []
        return
    model = run.json["model_sha1"]
    status = jobs.read_status(LocalStore(data), model)
    assert status is not None and status["status"] == "error"
    assert re.search(pattern, status["message"])
    _assert_nothing_half_written(data, model)


def test_unreachable_csv_url(tmp_path: Path) -> None:
    run = run_stl(["train", "http://127.0.0.1:9/train.csv"], tmp_path / "data")
    assert run.code == 1 and "Traceback" not in run.err
    assert run.error_line == "stl: error: cannot reach http://127.0.0.1:9/train.csv: Connection refused"


def test_unreachable_image_url(tmp_path: Path, file_server: FileServer) -> None:
    csv = small_dataset(file_server.root)
    csv.write_text(csv.read_text().replace("dots/001.png", "http://127.0.0.1:9/dots/001.png"))
    run = run_stl(["train", f"{file_server.url}/train.csv", *FAST], tmp_path / "data")
    assert run.code == 1
    assert run.error_line == (
        "stl: error: CSV line 6: cannot reach http://127.0.0.1:9/dots/001.png: Connection refused"
    )
    assert jobs.read_status(LocalStore(tmp_path / "data"), run.json["model_sha1"])["status"] == "error"


def test_csv_sha1_mismatch(tmp_path: Path, file_server: FileServer) -> None:
    small_dataset(file_server.root)
    run = run_stl(["train", f"{file_server.url}/train.csv", "--csv-sha1", "0" * 40, *FAST], tmp_path / "data")
    assert run.code == 1
    assert run.error_line.startswith(
        f"stl: error: sha1 mismatch for {file_server.url}/train.csv: expected {'0' * 40}"
    )


def test_bad_flags_and_unknown_model(tmp_path: Path) -> None:
    run = run_stl(["train", str(EXAMPLE / "train.csv"), "--epochs", "0"], tmp_path / "data")
    assert run.code == 2 and run.error_line == "stl: error: epochs must be between 1 and 1000, got 0"
    run = run_stl(["train", str(EXAMPLE / "train.csv"), "--epochs", "3"], tmp_path / "data")
    assert run.code == 2 and run.error_line == (
        "stl: error: epochs applies to head adam only; the logistic head trains to convergence "
        "(drop it, or ask for head adam)"
    )
    assert run_stl(["models"], tmp_path / "data").out == ""  # refused before anything was recorded
    run = run_stl(["infer", "--model", "f" * 40, str(EXAMPLE / "infer" / "dots.png")], tmp_path / "data")
    assert run.code == 1 and run.error_line == (
        f"stl: error: unknown model {'f' * 40} in the store at {tmp_path / 'data'} (DATA_DIR, or ./data)"
    )
    run = run_stl(["train", str(EXAMPLE / "train.csv"), "--base", "resnet"], tmp_path / "data")
    assert run.code == 2 and "unknown base 'resnet'" in run.error_line


def test_a_csv_a_person_writes_trains_with_the_sha1s_filled_in(tmp_path: Path) -> None:
    """A header row and no sha1 column, as people write them: the stored CSV, which the recipe
    names, is the complete one. (Not the example model's weights: the header moves every row a
    line down, and a row's line is part of its rank in the seeded split, so the folds differ.)"""
    shutil.copytree(EXAMPLE / "images", tmp_path / "set" / "images")
    rows = [line.split(",") for line in (EXAMPLE / "train.csv").read_text().splitlines()]
    written = tmp_path / "set" / "photos.csv"
    written.write_text("path,label\n" + "".join(f"{path},{label}\n" for path, label, _ in rows))
    run = run_stl(["train", str(written)], tmp_path / "data")
    assert run.code == 0, run.err[-2000:]
    shown = json.loads(run_stl(["show", run.json["model_sha1"]], tmp_path / "data").out)
    completed = "path,label,sha1\n" + "".join(f"{path},{label},{sha1}\n" for path, label, sha1 in rows)
    assert shown["recipe"]["csv_sha1"] == sha1_of(completed.encode())
    assert shown["outputs"]["weights"]["sha1"] == "a6672678aead0aeddf43db8ded59c6ac03cf6adf"
    assert run.json["model_sha1"] == "05777a09a391d98f8b0d774c90d49beaee7ebf1c"


def test_a_csv_that_cannot_train_leaves_no_model_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url_rows = tmp_path / "urls.csv"
    url_rows.write_text("url,label\nhttp://127.0.0.1:9/a.jpg,cat\nhttp://127.0.0.1:9/b.jpg,dog\n")
    run = run_stl(["train", str(url_rows)], data)
    assert run.code != 0 and run.error_line == (
        "stl: error: CSV line 2: no sha1 for http://127.0.0.1:9/a.jpg (an image URL needs one; "
        "a local file's is computed)"
    )
    missing = tmp_path / "missing.csv"
    missing.write_text("gone.png,cat\nother.png,dog\n")
    run = run_stl(["train", str(missing)], data)
    assert run.code != 0 and run.error_line.startswith("stl: error: CSV line 1: "), run.err[-1000:]
    assert "gone.png" in run.error_line
    one_label = tmp_path / "one.csv"
    one_label.write_text(f"{EXAMPLE}/images/dots/000.png,dots\n{EXAMPLE}/images/dots/001.png,dots\n")
    run = run_stl(["train", str(one_label)], data)
    assert run.error_line == "stl: error: CSV needs at least 2 labels to train a classifier, got 1"
    assert run_stl(["models"], data).out == ""  # none of them recorded a model

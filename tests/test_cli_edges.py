"""The CLI's edges: gunicorn options through `stl serve`, usage errors, and the 2019 settings."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from stl_testing import EXAMPLE, FAST, REPO, FileServer, free_port, run_stl


@pytest.mark.parametrize("style", ["plain", "after --", "API_HOST/API_PORT"])
def test_stl_serve_passes_gunicorn_options(tmp_path: Path, style: str) -> None:
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "--workers", "1"]
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data")}
    if style == "after --":
        args = ["--", *args]
    elif style == "API_HOST/API_PORT":
        args = ["--workers", "1"]
        env.update(API_HOST="127.0.0.1", API_PORT=str(port), PORT="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "handlers.cli", "serve", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                    break
            assert time.time() < deadline, "stl serve did not answer on the port it was given"
            time.sleep(0.3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_bad_model_hash_is_a_usage_error(tmp_path: Path) -> None:
    run = run_stl(["infer", "--model", "../../etc", str(EXAMPLE / "infer" / "dots.png")], tmp_path / "d")
    assert run.code == 2
    assert run.err.strip().endswith(
        "argument --model: must be a model's sha1 or a prefix of at least 7 lowercase hex digits, got '../../etc'"
    )
    assert run_stl(["show", "a" * 40 + "\n"], tmp_path / "d").code == 2


def test_labelling_with_a_model_whose_training_failed_says_why(tmp_path: Path) -> None:
    from model.jobs import state as jobs
    from store import LocalStore

    failed = "c" * 40
    jobs.write_status(LocalStore(tmp_path / "d"), failed, "error", message="CSV line 2: empty label")
    run = run_stl(["infer", "--model", failed, str(EXAMPLE / "infer" / "dots.png")], tmp_path / "d")
    assert run.code == 1
    assert (
        run.error_line
        == f"stl: error: model {failed} is not ready: its training is error: CSV line 2: empty label"
    )
    unknown = run_stl(["infer", "--model", "d" * 40, str(EXAMPLE / "infer" / "dots.png")], tmp_path / "d")
    assert unknown.error_line == (
        f"stl: error: unknown model {'d' * 40} in the store at {tmp_path / 'd'} (DATA_DIR, or ./data)"
    )


def test_a_csv_field_over_the_limit_is_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "long.csv"
    csv.write_text("x" * 140_000 + ",dots," + "0" * 40 + "\n")
    run = run_stl(["train", str(csv)], tmp_path / "d")
    assert run.code == 1 and "Traceback" not in run.err
    assert run.error_line == "stl: error: CSV line 1: a field is longer than 131072 characters"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DEFAULT_MODEL_FILENAME": "model.h5"},
            "DEFAULT_MODEL_FILENAME is not supported: a model is named by its hash (model_sha1), "
            "not a file name; unset it",
        ),
        (
            {"TENSORBOARD_LOGS_ENABLED": "true"},
            "TENSORBOARD_LOGS_ENABLED is not supported: TensorFlow is not used for training; "
            "the head's per-epoch loss is in the run record (stl show); unset it",
        ),
        (
            {"TRAIN_PERCENTAGE": "0.905"},
            "TRAIN_PERCENTAGE must be a whole percentage from 1 to 100 or a fraction such as 0.8, got '0.905'",
        ),
        (
            {"DATA_LIMIT": "few"},
            "DATA_LIMIT must be 0 (balance labels), a positive count, or none, got 'few'",
        ),
        (
            {"REQUEST_HEAD_TIMEOUT_S": "0"},
            "environment variable REQUEST_HEAD_TIMEOUT_S must be a positive number of seconds, got 0.0",
        ),
        (
            {"REQUEST_BODY_TIMEOUT_S": "inf"},
            "environment variable REQUEST_BODY_TIMEOUT_S must be a positive number of seconds, got inf",
        ),
    ],
)
def test_settings_that_cannot_be_honoured_stop_at_start(tmp_path: Path, env: dict, message: str) -> None:
    run = run_stl(["show", "a" * 40], tmp_path / "d", env=env)
    assert run.code == 2 and run.error_line == f"stl: error: {message}", run.err
    serve = subprocess.run(
        [sys.executable, "-m", "handlers.cli", "serve", "--bind", f"127.0.0.1:{free_port()}"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 2 and serve.stderr.strip() == f"stl: error: {message}"


def test_the_2019_settings_are_honoured(tmp_path: Path) -> None:
    # DEFAULT_INPUT_CSV_URL is the CSV when none is named; TRAIN_PERCENTAGE=0.9 is 90 %;
    # DATA_LIMIT=0 balances every label down to the smallest one's count.
    env = {
        "DEFAULT_INPUT_CSV_URL": str(EXAMPLE / "train.csv"),
        "TRAIN_PERCENTAGE": "0.9",
        "DATA_LIMIT": "0",
        "DEFAULT_TEST_IMG_URL": str(EXAMPLE / "infer" / "dots.png"),
    }
    run = run_stl(["train", *FAST], tmp_path / "d", env=env)
    assert run.code == 0, run.err
    shown = json.loads(run_stl(["show", run.json["model_sha1"]], tmp_path / "d", env=env).out)
    assert shown["recipe"]["train_percentage"] == 90
    assert shown["recipe"]["data_limit"] == -1
    assert run.json["data_limit"] == "balance"  # the train output says what DATA_LIMIT=0 meant
    named = run_stl(
        ["train", str(EXAMPLE / "train.csv"), *FAST, "--train-percentage", "90", "--data-limit", "balance"],
        tmp_path / "d",
    )
    assert named.json["model_sha1"] == run.json["model_sha1"]
    labelled = run_stl(["infer", "--model", run.json["model_sha1"]], tmp_path / "d", env=env)
    assert labelled.code == 0 and json.loads(labelled.out)["image"] == env["DEFAULT_TEST_IMG_URL"]


def test_data_limit_takes_words_and_refuses_the_ambiguous_numbers(tmp_path: Path) -> None:
    """DATA_LIMIT=0 balances (2019) while a body's 0 means all: the flag takes all|balance|N."""
    csv = str(EXAMPLE / "train.csv")
    for raw in ("0", "-1"):
        run = run_stl(["train", csv, *FAST, "--data-limit", raw], tmp_path / "d")
        assert run.code == 2
        assert (
            f"argument --data-limit: give all, balance or a positive count, not '{raw}' "
            "(ambiguous: DATA_LIMIT=0 balances, a request's 0 means all)"
        ) in run.err
    capped = run_stl(["train", csv, *FAST, "--data-limit", "5"], tmp_path / "d")
    assert capped.code == 0, capped.err
    assert capped.json["data_limit"] == 5
    everything = run_stl(["train", csv, *FAST, "--data-limit", "all"], tmp_path / "d")
    plain = run_stl(["train", csv, *FAST], tmp_path / "d")
    assert everything.json["data_limit"] == plain.json["data_limit"] == "all"
    assert everything.json["model_sha1"] == plain.json["model_sha1"] != capped.json["model_sha1"]


def test_an_image_that_cannot_be_fetched_names_its_csv_line(tmp_path: Path, file_server: FileServer) -> None:
    rows = []
    for label in ("checks", "dots"):
        for n in ("000", "001"):
            data = (EXAMPLE / "images" / label / f"{n}.png").read_bytes()
            (file_server.root / f"{label}{n}.png").write_bytes(data)
            rows.append(f"{file_server.url}/{label}{n}.png,{label},{hashlib.sha1(data).hexdigest()}")
    rows.insert(2, f"{file_server.url}/gone.png,dots,{'0' * 40}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    run = run_stl(["train", str(tmp_path / "train.csv"), *FAST], tmp_path / "d")
    assert run.code == 1
    assert run.error_line == f"stl: error: CSV line 3: HTTP 404 fetching {file_server.url}/gone.png"


def test_the_head_stage_counts_its_l2_strengths(tmp_path: Path) -> None:
    """Not `head 0/1` until it is over: one step per l2 strength cross-validated (six)."""
    run = run_stl(["train", str(EXAMPLE / "train.csv"), "--image-size", "96"], tmp_path / "d")
    assert run.code == 0, run.err
    assert "head:   0%|          | 0/6 " in run.err


def test_one_image_under_two_labels_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """The example rows plus the 24 `checks` images again as `dots`: a contradiction, not a model."""
    rows = (EXAMPLE / "train.csv").read_text().splitlines()
    relabelled = [r.replace(",checks,", ",dots,") for r in rows if ",checks," in r]
    csv = tmp_path / "train.csv"
    csv.write_text("\n".join(r.replace("images/", f"{EXAMPLE}/images/") for r in rows + relabelled) + "\n")
    first = rows[0].split(",")[2]
    run = run_stl(["train", str(csv), *FAST], tmp_path / "d")
    assert run.code == 1
    assert run.error_line == (
        f"stl: error: CSV lines 1 and {len(rows) + 1} give one image ({first}) two labels, 'checks' and "
        "'dots' (ALLOW_CONFLICTING_LABELS=1 trains on both)"
    )
    assert run_stl(["models"], tmp_path / "d").out == ""  # refused before anything was recorded
    allowed = run_stl(["train", str(csv), *FAST], tmp_path / "d", env={"ALLOW_CONFLICTING_LABELS": "1"})
    assert allowed.code == 0 and allowed.json["status"] == "ready", allowed.err


def test_two_spellings_of_one_label_are_refused(tmp_path: Path) -> None:
    """café composed (NFC) and decomposed (NFD) are one word to a reader and two classes to a head."""
    lines = []
    for label, folder in [("caf\u00e9", "checks"), ("cafe\u0301", "dots"), ("tea", "stripes")]:
        for i in range(2):
            path = EXAMPLE / "images" / folder / f"{i:03d}.png"
            lines.append(f"{path},{label},{hashlib.sha1(path.read_bytes()).hexdigest()}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = run_stl(["train", str(tmp_path / "train.csv"), *FAST], tmp_path / "d")
    assert run.code == 1
    assert run.error_line == (
        "stl: error: CSV lines 1 and 3 spell one label two ways ('caf\\xe9' and 'cafe\\u0301': the same "
        "text in Unicode's composed and decomposed forms); write one"
    )


def test_more_labels_than_max_labels_are_refused_before_any_work(tmp_path: Path) -> None:
    """10,000 labels ran a head for minutes toward 7 GB; the bound is stated and checked at once."""
    run = run_stl(["train", str(EXAMPLE / "train.csv"), *FAST], tmp_path / "d", env={"MAX_LABELS": "2"})
    assert run.code == 1
    assert run.error_line == "stl: error: CSV has 3 labels, over the limit of 2 (MAX_LABELS)"
    assert run_stl(["models"], tmp_path / "d").out == ""


def test_a_folder_nested_1100_deep_trains(tmp_path: Path) -> None:
    """Issue 44, defect 12: os.walk's recursion ended a folder 1,100 deep in a RecursionError."""
    import shutil

    from stl_testing import small_dataset

    root = tmp_path / "photos"
    small_dataset(root)
    (root / "train.csv").unlink()
    deep = str(root / "dots")
    for _ in range(1100):  # os.makedirs recurses too
        deep += "/d"
        os.mkdir(deep)
    for png in sorted((root / "dots").glob("*.png")):
        shutil.move(png, os.path.join(deep, png.name))
    try:
        run = run_stl(["train", str(root), *FAST], tmp_path / "d")
        assert run.code == 0, run.err[-2000:]
        assert "Traceback" not in run.err
        photos = run.json["photos"]
        assert (photos["images"], photos["labels"]) == (12, ["checks", "dots", "stripes"])
    finally:  # deepest first: pytest's own clean-up (shutil.rmtree) recurses too
        for png in os.listdir(deep):
            os.unlink(os.path.join(deep, png))
        while deep != str(root / "dots"):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


def test_base_import_reads_only_a_regular_file_of_a_base_files_size(tmp_path: Path) -> None:
    """Issue 44, defect 12: `stl base import` read the whole file (a 3 GiB file took 3.19 GB;
    /dev/zero ended in MemoryError), and a missing file with --base was a raw "[Errno 2]"."""
    missing = tmp_path / "nothing.tflite"
    huge = tmp_path / "huge.h5"
    with open(huge, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: no disk, but 3 GiB to whoever reads it whole
    cases = [
        (["--base", "efficientnet-lite0", str(missing)], f"cannot read {missing}: No such file or directory"),
        (["/dev/zero"], "/dev/zero is not a regular file"),
        (
            ["--base", "efficientnet-b0", str(huge)],
            f"{huge} is 3,221,225,472 bytes: no base file is over 1,073,741,824",
        ),
    ]
    for args, message in cases:
        run = run_stl(["base", "import", *args], tmp_path / "d")
        assert (run.code, run.error_line) == (2, f"stl: error: {message}"), run.err[-2000:]
        assert "Traceback" not in run.err


def test_an_empty_zip_and_a_png_with_a_zip_appended_are_one_line_each(tmp_path: Path) -> None:
    """Issue 44, defect 12: an empty zip was read as a CSV ("CSV line 1: expected 3 fields"); a PNG
    with a zip appended was refused by the CLI but trained as a zip through the API. One rule:
    a zip begins like one (tests/api/test_zip_training.py holds the API to it)."""
    import io
    import zipfile

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    png = (EXAMPLE / "images" / "dots" / "000.png").read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for label in ("dots", "checks"):
            for i in range(2):
                z.writestr(f"{label}/{i}.png", (EXAMPLE / "images" / label / f"00{i}.png").read_bytes())
    appended = tmp_path / "photo.png"
    appended.write_bytes(png + archive.getvalue())
    for source, message in [
        (empty, f"{empty} has no images in label folders (expected <label>/<image> inside it)"),
        (appended, f"{appended} is not a zip archive: it does not begin with a zip entry"),
    ]:
        run = run_stl(["train", str(source), *FAST], tmp_path / "d")
        assert (run.code, run.error_line) == (1, f"stl: error: {message}"), run.err[-2000:]

"""Issue 41's CLI frictions, as a new user met them.

Item 7: the pages show 12-digit prefixes and `stl export` writes them in file names; every command
that names a model takes any unique prefix of 7 or more hex digits. Item 3: an unknown model names
the store it was looked for in, and a command that only reads never creates a store. Item 5: `stl
show` and `stl models` agree on a job whose process stopped. Item 10: times people read, and a
photo given to `stl train` says what training takes.
"""

from __future__ import annotations

from pathlib import Path

from stl_testing import EXAMPLE, FAST, run_stl, small_dataset

from model.identity.refs import status_ref
from model.jobs import state as jobs
from model.lifecycle.catalog import STALLED_MESSAGE
from store import LocalStore


def test_a_unique_prefix_names_a_model_and_an_ambiguous_one_lists_the_candidates(tmp_path: Path) -> None:
    data = tmp_path / "d"
    trained = run_stl(["train", str(small_dataset(tmp_path / "set")), *FAST], data)
    assert trained.code == 0, trained.err[-2000:]
    model = trained.json["model_sha1"]

    shown = run_stl(["show", model[:7]], data)
    assert shown.code == 0, shown.err
    assert shown.out == run_stl(["show", model], data).out and '"recipe"' in shown.out
    exported = run_stl(["export", model[:12], "--out", str(tmp_path / "m.tflite")], data)
    assert exported.code == 0 and exported.json["model_sha1"] == model, exported.err

    short = run_stl(["show", model[:6]], data)
    assert short.code == 2
    assert (
        f"must be a model's sha1 or a prefix of at least 7 lowercase hex digits, got '{model[:6]}'"
        in short.err
    )

    unknown = run_stl(["verify", "0000000"], data)
    assert (unknown.code, unknown.error_line) == (
        1,
        f"stl: error: unknown model 0000000 in the store at {data} (DATA_DIR, or ./data)",
    )

    twin = model[:7] + "0" * 33 if model[7] != "0" else model[:7] + "1" * 33
    LocalStore(data).set_ref(status_ref(twin), b'{"status": "error"}')
    both = sorted([model, twin])
    ambiguous = run_stl(["show", model[:7]], data)
    assert (ambiguous.code, ambiguous.error_line) == (
        2,
        f"stl: error: {model[:7]} starts 2 models' sha1s: {both[0]}, {both[1]}",
    )
    assert run_stl(["show", model[:8]], data).out == shown.out


def test_a_command_that_reads_never_creates_a_store(tmp_path: Path) -> None:
    """`cd ~ && stl infer --model X photo.jpg` said `unknown model X` and created ~/data."""
    missing = tmp_path / "nowhere"
    for args in (["show", "a" * 40], ["infer", "--model", "a" * 40, "x.png"], ["models"], ["gc"]):
        run = run_stl(args, missing)
        assert (run.code, run.error_line) == (
            1,
            f"stl: error: no store at {missing}: nothing was trained there "
            "(--store, STORE_URI or DATA_DIR name another)",
        ), args
        assert not missing.exists()


def test_show_and_models_agree_on_a_job_whose_process_stopped(tmp_path: Path) -> None:
    """After Ctrl-C, `stl show` said in_progress (owner cli-<pid>) while `stl models` said stalled."""
    store = LocalStore(tmp_path / "d")
    sha1 = "c" * 40
    jobs.write_status(store, sha1, "in_progress", owner="cli-4242", updated_at=1796700000.25)
    shown = run_stl(["show", sha1], tmp_path / "d")
    assert shown.code == 0, shown.err
    assert (shown.json["status"], shown.json["message"]) == ("stalled", STALLED_MESSAGE)
    listed = run_stl(["models"], tmp_path / "d")
    assert listed.json["status"] == "stalled"
    assert listed.json["updated_at"] == "2026-12-08T03:20:00Z"  # ISO 8601 in UTC, not 1796700000.25


def test_a_photo_given_to_train_says_what_training_takes(tmp_path: Path) -> None:
    photo = EXAMPLE / "infer" / "dots.png"
    run = run_stl(["train", str(photo)], tmp_path / "d")
    assert (run.code, run.error_line) == (
        1,
        f"stl: error: {photo} is an image: training takes a CSV of <image>,<label>,<sha1> rows, "
        "a folder with one subfolder of images per label, or a zip of such a folder",
    )


def test_verify_shows_its_stages_as_training_does(tmp_path: Path) -> None:
    """Issue 41, item 4: `stl verify` was silent for 44 s on 300 photos while train shows bars."""
    data = tmp_path / "d"
    trained = run_stl(["train", str(small_dataset(tmp_path / "set")), *FAST], data)
    assert trained.code == 0, trained.err[-2000:]
    verified = run_stl(["verify", trained.json["model_sha1"][:10]], data)
    assert verified.code == 0, verified.err[-2000:]
    assert verified.json["identical"] is True
    for stage in ("copy: ", "rebuild: fetch: ", "rebuild: features: ", "rebuild: head: "):
        assert stage in verified.err, verified.err[-2000:]

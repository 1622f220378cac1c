"""A machine without TensorFlow (`pip install .[serve]`) gets its int8 base from elsewhere.

The base is an artifact with a sha1: `stl base export` writes it where it is, `stl base
import` takes it (and verifies it against the pin) where it is not, and BASE_STORE names
another store to take it from. Without any of them, one line names the ways.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stl_testing import EXAMPLE, REPO, run_stl, sha1_of, without_modules

from store import LocalStore

#: The published int8 files (also pinned in model/bases/registry.py).
LITE0_INT8 = "bc49998771f10ee503640d26bd579553c2da8373"
LITE2_INT8 = "141fb4fb6a2da441d31bb0fa934973dfdb03a581"


@pytest.fixture
def bare(tmp_path: Path) -> dict[str, str]:
    """A machine without the convert extra and with an empty base cache."""
    return {**without_modules(tmp_path), "STL_BASE_CACHE": str(tmp_path / "empty-base-cache")}


def test_train_without_tensorflow_names_the_ways_to_bring_the_base(tmp_path: Path, bare: dict) -> None:
    run = run_stl(["train", str(EXAMPLE / "train.csv")], tmp_path / "data", env=bare)
    assert run.code == 1, run.err
    assert "Traceback" not in run.err
    assert run.error_line.startswith(
        "stl: error: base efficientnet-lite2 is in no store or base cache here, and this machine "
        "cannot convert it (tensorflow is not installed): install the convert extra"
    )
    for remedy in ("stl base import FILE", "stl base export efficientnet-lite2", "BASE_STORE="):
        assert remedy in run.error_line
    # Refused before anything was recorded: no failed model in the list.
    assert run_stl(["models"], tmp_path / "data", env=bare).out == ""


def test_export_here_import_there_without_tensorflow(tmp_path: Path, bare: dict) -> None:
    """Export from a machine that has the base (to a file and to stdout), import on a bare one."""
    exported = run_stl(
        ["base", "export", "efficientnet-lite0", "--out", str(tmp_path / "lite0.tflite")], tmp_path / "a"
    )
    assert exported.code == 0, exported.err
    data = (tmp_path / "lite0.tflite").read_bytes()
    assert sha1_of(data) == LITE0_INT8
    assert (tmp_path / "lite0.tflite").stat().st_mode & 0o777 == 0o644
    piped = subprocess.run(
        [sys.executable, "-m", "handlers.cli", "base", "export", "efficientnet-lite0"],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "DATA_DIR": str(tmp_path / "a")},
    )
    assert piped.returncode == 0 and piped.stdout == data

    imported = run_stl(["base", "import", str(tmp_path / "lite0.tflite")], tmp_path / "b", env=bare)
    assert imported.code == 0, imported.err
    assert imported.json == {"base": "efficientnet-lite0", "weights_sha1": LITE0_INT8}
    listed = [
        json.loads(line) for line in run_stl(["base", "list"], tmp_path / "b", env=bare).out.splitlines()
    ]
    assert {r["base"]: r["in_store"] for r in listed}["efficientnet-lite0"] is True


def test_import_refuses_a_file_that_is_no_published_base(tmp_path: Path, bare: dict) -> None:
    (tmp_path / "x.tflite").write_bytes(b"TFL3 but not a base")
    run = run_stl(["base", "import", str(tmp_path / "x.tflite")], tmp_path / "data", env=bare)
    assert run.code == 2
    assert run.error_line.startswith(
        f"stl: error: a file with sha1 {sha1_of(b'TFL3 but not a base')} is no published int8 base"
    )
    assert list(LocalStore(tmp_path / "data").list_objects()) == []


def test_export_refuses_a_terminal(tmp_path: Path) -> None:
    """Binary on a terminal helps nobody: say how to redirect it."""
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "handlers.cli", "base", "export", "efficientnet-lite0"],
        stdout=follower,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "DATA_DIR": str(tmp_path)},
        text=True,
    )
    os.close(follower)
    os.close(leader)
    assert proc.returncode == 2
    assert "stl: error: stdout is a terminal: redirect it (> FILE) or name a file with --out" in proc.stderr


def test_base_store_brings_the_base_without_tensorflow(tmp_path: Path, bare: dict) -> None:
    """BASE_STORE (any store URI; a local one here) is read, verified, before any conversion."""
    team = tmp_path / "team-store"
    assert run_stl(["base", "ensure", "--base", "efficientnet-lite2"], team).code == 0
    run = run_stl(["base", "ensure"], tmp_path / "data", env={**bare, "BASE_STORE": str(team)})
    assert run.code == 0, run.err
    assert run.json == {"base": "efficientnet-lite2", "weights_sha1": LITE2_INT8}
    assert LocalStore(tmp_path / "data").has(LITE2_INT8)
    # The base cache now holds it too: the next store on this machine needs no BASE_STORE.
    again = run_stl(["base", "ensure"], tmp_path / "other", env=bare)
    assert again.json["weights_sha1"] == LITE2_INT8, again.err


def test_base_store_with_other_bytes_than_the_pin_is_refused(tmp_path: Path, bare: dict) -> None:
    team = LocalStore(tmp_path / "team-store")
    forged = team.put(b"TFL3 forged base")
    team.set_ref("bases/efficientnet-lite2", json.dumps({"weights_sha1": forged}).encode())
    run = run_stl(
        ["base", "ensure"], tmp_path / "data", env={**bare, "BASE_STORE": str(tmp_path / "team-store")}
    )
    assert run.code == 1
    assert run.error_line == (
        f"stl: error: BASE_STORE {tmp_path / 'team-store'} holds efficientnet-lite2 as {forged}, "
        f"but it is pinned to {LITE2_INT8}"
    )
    assert not LocalStore(tmp_path / "data").has(forged)


@pytest.mark.parametrize("ref", [b'{"name": "efficientnet-lite2"}', b"not json", b'{"weights_sha1": 7}'])
def test_a_base_store_ref_that_is_no_record_is_one_line_naming_base_store(
    tmp_path: Path, bare: dict, ref: bytes
) -> None:
    """Issue 44, defect 8: a ref without weights_sha1 was a KeyError traceback (500 on /train)."""
    LocalStore(tmp_path / "team-store").set_ref("bases/efficientnet-lite2", ref)
    env = {**bare, "BASE_STORE": str(tmp_path / "team-store")}
    run = run_stl(["base", "ensure"], tmp_path / "data", env=env)
    assert run.code == 1 and "Traceback" not in run.err
    assert run.error_line == (
        f"stl: error: BASE_STORE {tmp_path / 'team-store'}: its ref bases/efficientnet-lite2 is not a base "
        "record (a JSON object whose weights_sha1 is a sha1)"
    )


@pytest.mark.parametrize(
    "bytes_of, why",
    [
        (lambda lite0: b"\0\0\0\0TFL3 a header and nothing else", "efficientnet-b0 is not a LiteRT model: "),
        (lambda lite0: lite0[: len(lite0) // 2], "efficientnet-b0 is not a LiteRT model: "),
        (lambda lite0: lite0, "it is the published file of efficientnet-lite0"),
    ],
)
def test_an_imported_base_from_base_store_is_checked_before_anything_is_recorded(
    tmp_path: Path, bare: dict, base_cache: Path, bytes_of, why: str
) -> None:
    """Issue 44, defect 8: a TFL3 blob, a truncated file or another base's file in BASE_STORE was
    taken as efficientnet-b0 and its record copied, to fail later or train under the wrong name."""
    team = LocalStore(tmp_path / "team-store")
    forged = team.put(bytes_of(LocalStore(base_cache).get(LITE0_INT8)))
    team.set_ref(
        "bases/efficientnet-b0", json.dumps({"name": "efficientnet-b0", "weights_sha1": forged}).encode()
    )
    env = {**bare, "BASE_STORE": str(tmp_path / "team-store")}
    run = run_stl(["base", "ensure", "--base", "efficientnet-b0"], tmp_path / "data", env=env)
    assert run.code == 1 and "Traceback" not in run.err
    assert run.error_line.startswith(
        f"stl: error: BASE_STORE {tmp_path / 'team-store'} holds efficientnet-b0 as {forged}, which is refused: {why}"
    )
    assert run.err.strip().splitlines()[-1] == run.error_line  # one line, the last
    local = LocalStore(tmp_path / "data")
    assert local.get_ref("bases/efficientnet-b0") is None and not local.has(forged)


def test_base_store_is_read_only_and_must_exist(tmp_path: Path, bare: dict, base_cache: Path) -> None:
    """Issue 44, defect 7: a missing BASE_STORE path was created, and a read-only one failed with
    "Read-only file system" (its staging folder was made on open)."""
    missing = tmp_path / "no-such-store"
    run = run_stl(["base", "ensure"], tmp_path / "data", env={**bare, "BASE_STORE": str(missing)})
    assert (
        run.code == 1
        and run.error_line == f"stl: error: BASE_STORE {missing} cannot be read: {missing} is not a folder"
    )
    assert not missing.exists()
    team = tmp_path / "team-store"
    shipped = LocalStore(team)
    shipped.put(LocalStore(base_cache).get(LITE2_INT8))
    shutil.rmtree(team / "tmp")
    team.chmod(0o555)  # root writes through modes: what is checked is that nothing appears
    before = sorted(p.relative_to(team) for p in team.rglob("*"))
    run = run_stl(["base", "ensure"], tmp_path / "data", env={**bare, "BASE_STORE": str(team)})
    assert run.code == 0, run.err
    assert run.json == {"base": "efficientnet-lite2", "weights_sha1": LITE2_INT8}
    assert sorted(p.relative_to(team) for p in team.rglob("*")) == before

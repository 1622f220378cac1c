"""Garbage collection never deletes what a model or a running job references; it reclaims the rest."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from stl_testing import run_stl, small_dataset

from model import api, gc, jobs
from model.manifest import load_manifest
from store import LocalStore

QUICK = {"epochs": 5, "l2": 0.001, "image_size": 96, "head": "adam", "train_percentage": 75}
DAY = 86400.0


def age_everything(root: Path, seconds: float) -> None:
    """Make every object and ref look ``seconds`` old, as a store long in use would be."""
    then = time.time() - seconds
    for sub in ("objects", "refs"):
        for dirpath, _dirs, files in os.walk(root / sub):
            for name in files:
                os.utime(os.path.join(dirpath, name), (then, then))


def referenced_by(store: LocalStore, model_sha1: str) -> set[str]:
    """Every object a model's manifest names, and the manifest itself."""
    manifest = load_manifest(store, model_sha1)
    names = gc.sha1s_in(json.dumps(manifest).encode()) - {model_sha1}
    names.add((store.get_ref(f"models/{model_sha1}/manifest") or b"").decode())
    return names


def test_sha1s_in_finds_whole_words_only() -> None:
    a, b = "a" * 40, "0123456789abcdef0123456789abcdef01234567"
    assert gc.sha1s_in(f'{{"x": "{a}", "y": ["{b}"]}}'.encode()) == {a, b}
    assert gc.sha1s_in(("f" * 41).encode()) == set()  # not a sha1: one digit too many


def test_a_dry_run_deletes_nothing_then_delete_reclaims_only_the_forgotten_model(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    keep = api.train(str(csv), store=store, **QUICK)
    drop = api.train(str(csv), store=store, **{**QUICK, "random_seed": 7})
    keep_refs = referenced_by(store, keep.sha1)
    drop_only = referenced_by(store, drop.sha1) - keep_refs
    # The second model shares the images, tensors and features; its weights, manifest and row table
    # (another seed, another split) are its own.
    assert len(drop_only) == 3
    jobs.delete(store, drop.sha1)
    before = set(store.list_objects())

    young = gc.collect(store, grace_s=DAY, delete=True)  # everything is minutes old: nothing goes
    assert young.deleted == 0 and set(store.list_objects()) == before

    age_everything(tmp_path / "data", 2 * DAY)
    dry = gc.collect(store, grace_s=DAY)
    assert dry.dry_run and dry.deleted == 0 and set(store.list_objects()) == before
    assert drop_only <= set(dry.unreferenced)
    assert not keep_refs & set(dry.unreferenced)

    done = gc.collect(store, grace_s=DAY, delete=True)
    assert done.deleted == len(dry.unreferenced)
    left = set(store.list_objects())
    assert keep_refs <= left and not drop_only & left
    assert api.load(keep.sha1, store=store).predict([str(csv.parent / "dots" / "000.png")])[0]["dots"] > 0.5
    # The base network is referenced by its ref, not by a manifest: still there.
    assert keep.manifest["recipe"]["base_sha1"] in left
    again = gc.collect(store, grace_s=DAY, delete=True)
    assert again.deleted == 0 and again.unreferenced == []


def test_gc_during_a_training_keeps_everything_the_training_uses(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    old = api.train(str(csv), store=store, **QUICK)
    old_weights = old.manifest["outputs"]["weights"]["sha1"]
    old_manifest = (store.get_ref(f"models/{old.sha1}/manifest") or b"").decode()
    jobs.delete(store, old.sha1)  # its images, tensors and features are now referenced by nothing
    age_everything(tmp_path / "data", 2 * DAY)

    in_features, release = threading.Event(), threading.Event()

    class Pause:
        def __init__(self, stage: str) -> None:
            self.stage = stage

        def update(self, n: int = 1) -> None:
            if self.stage == "head" and not in_features.is_set():
                in_features.set()  # features done (read from old caches), head not trained yet
                release.wait(60)

        def close(self) -> None:
            pass

    result: dict[str, Any] = {}

    def train() -> None:
        # Another seed: the same cached tensors and features, new weights. Its inputs are all old.
        result["model"] = api.train(
            str(csv), store=store, progress=lambda stage, total: Pause(stage), **{**QUICK, "random_seed": 99}
        )

    thread = threading.Thread(target=train)
    thread.start()
    assert in_features.wait(120)
    report = gc.collect(store, grace_s=DAY, delete=True)
    release.set()
    thread.join(120)
    model = result["model"]
    # The old model's weights, manifest, row table and run record went; what the running job reads
    # stayed.
    gone = set(report.unreferenced)
    assert report.deleted == 4
    assert {old_weights, old_manifest} <= gone and len(gone) == 4, report.summary()
    needed = referenced_by(store, model.sha1)
    assert needed <= set(store.list_objects())
    for sha1 in needed:
        store.get(sha1)  # present and intact
    assert model.predict([str(csv.parent / "checks" / "000.png")])[0]["checks"] > 0.5


def test_stl_gc_is_a_dry_run_unless_told(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    trained = run_stl(
        ["train", str(csv), "--epochs", "5", "--l2", "0.001", "--image-size", "96"], tmp_path / "d"
    )
    assert trained.code == 0, trained.err
    model_sha1 = trained.json["model_sha1"]
    deleted = run_stl(["delete", model_sha1], tmp_path / "d")
    assert deleted.code == 0 and deleted.json == {
        "deleted": True,
        "model_sha1": model_sha1,
        "status": "ready",
    }
    listed = run_stl(["models"], tmp_path / "d")
    assert listed.code == 0 and listed.out == ""
    dry = run_stl(["gc", "--grace", "0"], tmp_path / "d")
    assert dry.code == 0 and dry.json["dry_run"] is True and dry.json["unreferenced"] > 0
    assert "would be deleted; run `stl gc --delete`" in dry.err
    real = run_stl(["gc", "--grace", "0", "--delete"], tmp_path / "d")
    assert real.code == 0 and real.json["deleted"] == dry.json["unreferenced"]
    assert run_stl(["gc", "--grace", "0"], tmp_path / "d").json["unreferenced"] == 0
    again = run_stl(["delete", model_sha1], tmp_path / "d")
    assert again.code == 1 and again.err.strip() == f"stl: error: unknown model {model_sha1}"

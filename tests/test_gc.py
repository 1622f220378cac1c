"""Garbage collection never deletes what a model or a running job references; it reclaims the rest."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from stl_testing import run_stl, small_dataset

from model import api
from model.execution import local as local_executor
from model.identity.manifest import load_manifest, manifest_rows
from model.jobs import state as jobs
from model.lifecycle import gc
from model.lifecycle.verify import verify_model
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
    # The old model's weights, manifest, row table and run record went, and the head shards its
    # training wrote (one per split: derived, named by no ref once it ended); what the running
    # job reads stayed, its own shards included (named by its ledger, not kept for their age).
    gone = set(report.unreferenced)
    assert report.deleted == 6
    assert {old_weights, old_manifest} <= gone and len(gone) == 6, report.summary()
    assert report.kept_young == 0, report.summary()
    needed = referenced_by(store, model.sha1)
    assert needed <= set(store.list_objects())
    for sha1 in needed:
        store.get(sha1)  # present and intact
    assert model.predict([str(csv.parent / "checks" / "000.png")])[0]["checks"] > 0.5


def test_a_fit_that_outlasts_the_grace_period_keeps_its_head_shards(tmp_path: Path, monkeypatch) -> None:
    """A long fit reads its head shards long after storing them (each epoch when they do not stay
    in memory, and whenever a Ray worker is replaced): gc keeps them while the job runs, however
    old they are, and lets them go once it has ended."""
    monkeypatch.setattr(local_executor, "HEAD_MEMORY_BYTES", 0)  # shards are read back every epoch
    csv = small_dataset(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    in_head, release = threading.Event(), threading.Event()

    class Pause:
        def __init__(self, stage: str) -> None:
            self.stage = stage

        def update(self, n: int = 1) -> None:
            if self.stage == "head" and n and not in_head.is_set():
                in_head.set()  # one epoch done: the rest read the shards again
                release.wait(60)

        def close(self) -> None:
            pass

    result: dict[str, Any] = {}

    def train() -> None:
        try:
            result["model"] = api.train(str(csv), store=store, progress=lambda s, t: Pause(s), **QUICK)
        except Exception as e:  # the job's error, for the assertion below
            result["error"] = e

    thread = threading.Thread(target=train)
    thread.start()
    assert in_head.wait(120)
    [ledger] = [n for n in store.list_refs("models") if n.endswith("/head-shards")]
    shards = json.loads(store.get_ref(ledger) or b"{}")["head_shards"]
    assert len(shards) == 2  # one per split
    age_everything(tmp_path / "data", 2 * DAY)  # the fit has run for two days
    report = gc.collect(store, grace_s=DAY, delete=True)
    release.set()
    thread.join(120)
    assert "error" not in result, result
    assert not set(shards) & set(report.unreferenced), report.summary()
    assert set(shards) <= set(store.list_objects())
    model = result["model"]
    assert model.predict([str(csv.parent / "checks" / "000.png")])[0]["checks"] > 0.5
    assert store.get_ref(ledger) is None  # the build ended: its shards are derived, droppable
    # A ledger that outlived its job (a crash) protects nothing.
    store.set_ref(ledger, json.dumps({"head_shards": shards}).encode())
    age_everything(tmp_path / "data", 2 * DAY)
    after = gc.collect(store, grace_s=DAY, delete=True)
    assert set(shards) <= set(after.unreferenced) and not set(shards) & set(store.list_objects())
    assert model.predict([str(csv.parent / "checks" / "000.png")])[0]["checks"] > 0.5


def test_stl_gc_is_a_dry_run_unless_told(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    trained = run_stl(["train", str(csv), "--l2", "0.001", "--image-size", "96"], tmp_path / "d")
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
    real = run_stl(["gc", "--grace", "0", "--delete", "--force"], tmp_path / "d")
    assert real.code == 0 and real.json["deleted"] == dry.json["unreferenced"]
    assert run_stl(["gc", "--grace", "0"], tmp_path / "d").json["unreferenced"] == 0
    again = run_stl(["delete", model_sha1], tmp_path / "d")
    assert again.code == 1 and again.err.strip() == (
        f"stl: error: unknown model {model_sha1} in the store at {tmp_path / 'd'} (DATA_DIR, or ./data)"
    )


class PausingStore(LocalStore):
    """A LocalStore whose ``list_objects`` (gc calls it after the mark, before the sweep) first runs
    a hook: a deterministic place to put a job between gc's mark and its sweep."""

    hook: Any = None

    def list_objects(self) -> list[str]:
        listed = super().list_objects()
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return listed


def named_by(store: LocalStore, model_sha1: str) -> set[str]:
    """Every object the model's manifest and its row table name (tensors, features, images too)."""
    manifest = load_manifest(store, model_sha1)
    table = store.get(manifest["inputs"]["rows"]["sha1"])
    return referenced_by(store, model_sha1) | gc.sha1s_in(table)


def missing_named(store: LocalStore, model_sha1: str) -> list[str]:
    """Objects that the model's manifest or row table names but the store lacks."""
    return sorted(sha1 for sha1 in named_by(store, model_sha1) if not store.has(sha1))


def test_a_job_started_after_the_mark_never_commits_an_object_the_sweep_deletes(tmp_path: Path) -> None:
    """Two models; A is deleted, its objects are old; gc marks; then A's request comes again and
    its training reads A's old cache entries; then gc sweeps them. A must end ready and whole."""
    csv = small_dataset(tmp_path / "set")
    store = PausingStore(tmp_path / "data")
    a = api.train(str(csv), store=store, **QUICK)
    b = api.train(str(csv), store=store, **{**QUICK, "image_size": 128})  # shares only the images
    a_manifest = (store.get_ref(f"models/{a.sha1}/manifest") or b"").decode()
    a_named = named_by(store, a.sha1)
    jobs.delete(store, a.sha1)
    age_everything(tmp_path / "data", 2 * DAY)
    result: dict[str, Any] = {}
    trainer = threading.Thread(target=lambda: result.update(model=api.train(str(csv), store=store, **QUICK)))

    def between_mark_and_sweep() -> None:
        trainer.start()
        # Until A's job has read every cache entry: it is ready (no fence) or waits to commit.
        deadline = time.time() + 120
        while time.time() < deadline:
            status = jobs.read_status(store, a.sha1) or {}
            if status.get("status") == "ready" or (status.get("progress") or {}).get("stage") == "commit":
                return
            time.sleep(0.05)
        raise AssertionError(f"A's training never got to its commit: {status}")

    store.hook = between_mark_and_sweep
    report = gc.collect(store, grace_s=DAY, delete=True)
    trainer.join(120)
    assert result["model"].sha1 == a.sha1
    # The sweep did delete A's old intermediates (B does not use them) ...
    assert len(set(report.unreferenced) & a_named) > 10, report.summary()
    # ... and A's training saw that, made them again, and then committed the same manifest.
    assert missing_named(store, a.sha1) == []
    assert (store.get_ref(f"models/{a.sha1}/manifest") or b"").decode() == a_manifest
    for sha1 in named_by(store, a.sha1):
        store.get(sha1)  # present and intact
    assert (jobs.read_status(store, a.sha1) or {})["status"] == "ready"
    assert missing_named(store, b.sha1) == []


def test_a_ready_model_with_missing_objects_is_repaired_by_the_next_train_request(tmp_path: Path) -> None:
    """As a store that an older gc damaged: a named tensor and feature vector are gone."""
    csv = small_dataset(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    model = api.train(str(csv), store=store, **QUICK)
    rows = list(manifest_rows(store, model.manifest))
    lost = [rows[0]["tensor_sha1"], rows[1]["features_sha1"][0]]
    for sha1 in lost:
        store.delete_object(sha1)
    gc.collect(store, grace_s=DAY, delete=True)  # a gc has run since the model was checked
    assert sorted(missing_named(store, model.sha1)) == sorted(lost)
    report = verify_model(store, model.sha1)
    assert report["identical"] is False and report["stage"] == "missing"
    assert f"tensor of CSV line {rows[0]['line']} ({lost[0]})" in report["message"]
    again = api.train(str(csv), store=store, **QUICK)
    assert again.sha1 == model.sha1
    assert missing_named(store, model.sha1) == []
    assert verify_model(store, model.sha1)["identical"] is True


def test_stl_gc_refuses_a_short_grace_unless_forced(tmp_path: Path) -> None:
    LocalStore(tmp_path / "d")  # an empty store (gc refuses one that does not exist)
    refused = run_stl(["gc", "--delete", "--grace", "0"], tmp_path / "d")
    assert refused.code == 2
    assert refused.error_line == (
        "stl: error: --grace 0 is below 3600 s: uploads not yet named by a training would be "
        "deleted; add --force if nothing is uploading"
    )
    assert run_stl(["gc", "--grace", "0"], tmp_path / "d").code == 0  # a dry run deletes nothing
    assert run_stl(["gc", "--delete", "--grace", "0", "--force"], tmp_path / "d").code == 0


def test_staged_copies_a_killed_writer_left_are_removed_past_the_grace(tmp_path: Path) -> None:
    """Issue 44, defect 6: a worker killed mid-unpack left DATA_DIR/tmp/tmp-* files (40 MB) that
    nothing removed. gc counts those older than its grace and removes them with --delete; the
    lock files beside them and a copy being written now stay."""
    store = LocalStore(tmp_path / "d")
    staging = tmp_path / "d" / "tmp"
    old, young, lock = staging / "tmp-killed", staging / "tmp-writing", staging / "lock-ab"
    old.write_bytes(b"x" * 40_000)
    young.write_bytes(b"y" * 10)
    lock.write_bytes(b"")
    for path in (old, lock):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    dry = gc.collect(store, grace_s=3600).summary()
    assert (dry["stale_staging_files"], dry["stale_staging_bytes"]) == (1, 40_000)
    assert old.exists()
    real = run_stl(["gc", "--delete", "--grace", "3600"], tmp_path / "d")
    assert real.code == 0, real.err
    assert (real.json["stale_staging_files"], real.json["stale_staging_bytes"]) == (1, 40_000)
    left = {p.name for p in staging.iterdir()}
    assert "tmp-killed" not in left and {"lock-ab", "tmp-writing"} <= left


def test_a_dry_run_lists_each_object_and_its_fate_and_both_runs_count_alike(tmp_path: Path) -> None:
    """Issue 41, item 8: the dry run printed counts only ("unreferenced": 0, "kept_young": 12),
    though its help says it lists them, and the forced run then reported "unreferenced": 12."""
    from datetime import datetime, timezone

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    csv = small_dataset(tmp_path / "set")
    data = tmp_path / "d"
    trained = run_stl(["train", str(csv), "--l2", "0.001", "--image-size", "96"], data)
    assert trained.code == 0, trained.err
    assert run_stl(["delete", trained.json["model_sha1"]], data).code == 0
    store = LocalStore(data)

    young = run_stl(["gc"], data)  # the default grace: a day
    lines = [json.loads(line) for line in young.out.splitlines()]
    listed, summary = lines[:-1], lines[-1]
    assert summary["unreferenced"] == len(listed) > 0 and summary["kept_young"] == len(listed)
    assert summary["deletable"] == 0
    for line in listed:
        modified, size = store.stat_object(line["object"])  # type: ignore[misc]
        assert line == {
            "object": line["object"],
            "bytes": size,
            "modified": iso(modified),
            "action": "keep",
            "until": iso(modified + 86400),
        }

    # With no grace the cache entries go too, and what only they reached.
    old = run_stl(["gc", "--grace", "0"], data)
    old_lines = [json.loads(line) for line in old.out.splitlines()]
    assert {line["object"] for line in old_lines[:-1]} > {line["object"] for line in listed}
    assert {line["action"] for line in old_lines[:-1]} == {"delete"}
    n = len(old_lines) - 1
    assert (old_lines[-1]["unreferenced"], old_lines[-1]["deletable"], old_lines[-1]["kept_young"]) == (
        n,
        n,
        0,
    )

    real = run_stl(["gc", "--grace", "0", "--delete", "--force"], data)
    assert real.out.count("\n") == 1  # a deleting run prints its counts only
    counts = real.json
    assert (counts["unreferenced"], counts["deletable"], counts["deleted"]) == (n, n, n)

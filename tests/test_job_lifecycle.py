"""Job progress, cancel and delete, on a real pipeline run against a local store."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from stl_testing import small_dataset

from model import api
from model.errors import JobCancelled, JobStateError, ModelNotFound
from model.jobs import state as jobs
from model.jobs.progress import JobProgress, cancel_ref, request_cancel, stage_eta
from store import LocalStore, ObjectStore
from store.memory import MemoryTransport

QUICK = {"epochs": 5, "l2": 0.001, "image_size": 96, "head": "adam", "train_percentage": 75}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_written_at_a_bounded_rate_with_each_stage_end() -> None:
    store = ObjectStore(MemoryTransport())
    clock = FakeClock()
    written: list[dict[str, Any]] = []
    progress = JobProgress(store, "a" * 40, "me", written.append, interval=1.0, clock=clock)
    bar = progress("features", 1000)
    for _ in range(999):
        bar.update(1)
        clock.now += 0.01  # 999 updates in 10 s: at most one write a second
    assert 10 <= len(written) <= 12, len(written)
    bar.update(1)  # the stage's end is always written
    assert written[0] == {"stage": "features", "done": 0, "total": 1000, "eta_s": None}
    assert written[-1]["done"] == 1000 and written[-1]["eta_s"] == 0.0
    middle = written[5]
    assert middle["stage"] == "features" and 0 < middle["done"] < 1000
    # ETA at the stage's mean pace: (elapsed / done) * (total - done).
    assert middle["eta_s"] == stage_eta(middle["done"], 1000, 0.01 * middle["done"])


def test_stage_eta() -> None:
    assert stage_eta(0, 10, 5.0) is None
    assert stage_eta(5, 10, 5.0) == 5.0
    assert stage_eta(10, 10, 5.0) == 0.0
    assert stage_eta(1, 4, 2.0) == 6.0


def test_a_cancel_for_another_attempt_is_ignored() -> None:
    store = ObjectStore(MemoryTransport())
    request_cancel(store, "b" * 40, "someone-else")
    progress = JobProgress(store, "b" * 40, "me", lambda _p: None, interval=0)
    progress("fetch", 3).update(1)  # no JobCancelled
    request_cancel(store, "b" * 40, "me")
    with pytest.raises(JobCancelled):
        progress("fetch", 3).update(1)


def test_a_running_training_reports_progress_then_is_cancelled_then_restarts(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    seen: list[dict[str, Any]] = []
    in_features, release = threading.Event(), threading.Event()
    model: dict[str, str] = {}

    class Gate:
        def __init__(self, stage: str) -> None:
            self.stage = stage

        def update(self, n: int = 1) -> None:
            if self.stage == "features" and not in_features.is_set():
                status = jobs.read_status(store, model["sha1"])
                assert status is not None
                seen.append(status)
                in_features.set()
                release.wait(30)

        def close(self) -> None:
            pass

    def watch(stage: str, total: int) -> Gate:
        return Gate(stage)

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            api.train(str(csv), store=store, progress=watch, **QUICK)
        except Exception as e:  # the cancelled job raises its message
            outcome["error"] = e

    from model.api import Context, train_job  # noqa: F401 - the recipe's hash, before the run
    from model.training.pipeline import prepare_recipe

    ctx = Context.open(store)
    model["sha1"] = prepare_recipe(ctx, dict(QUICK), str(csv), None).sha1
    thread = threading.Thread(target=run)
    thread.start()
    assert in_features.wait(60)
    status = jobs.read_status(store, model["sha1"])
    assert status is not None and status["status"] == "in_progress"
    # The fetch stage ended (12 images) and the features stage began: both were written.
    assert seen[0]["progress"]["stage"] == "features" and seen[0]["progress"]["total"] == 12
    with pytest.raises(JobStateError, match="cancel it before deleting it"):
        jobs.delete(store, model["sha1"])
    jobs.cancel(store, model["sha1"])
    release.set()
    thread.join(60)
    assert str(outcome["error"]) == "cancelled on request"
    status = jobs.read_status(store, model["sha1"])
    assert status is not None and status["status"] == "cancelled"
    assert store.get_ref(cancel_ref(model["sha1"])) is None  # the request was consumed
    assert not (tmp_path / "data" / "refs" / "models" / model["sha1"] / "manifest").exists()
    with pytest.raises(JobStateError, match="only a running job can be cancelled"):
        jobs.cancel(store, model["sha1"])

    # The same request again builds it: attempt 2, ready.
    again = api.train(str(csv), store=store, **QUICK)
    assert again.sha1 == model["sha1"]
    status = jobs.read_status(store, model["sha1"])
    assert status is not None and status["status"] == "ready" and status["attempt"] == 2
    assert "progress" not in status


def test_delete_forgets_the_model_and_keeps_its_objects(tmp_path: Path) -> None:
    csv = small_dataset(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    model = api.train(str(csv), store=store, **QUICK)
    weights = jobs.read_status(store, model.sha1)["weights_sha1"]  # type: ignore[index]
    assert [r["model_sha1"] for r in api.models(store=store)] == [model.sha1]
    assert jobs.delete(store, model.sha1)["status"] == "ready"
    assert api.models(store=store) == []
    assert store.list_refs(f"models/{model.sha1}") == []
    assert store.has(weights)  # objects wait for gc
    with pytest.raises(ModelNotFound):
        jobs.delete(store, model.sha1)
    with pytest.raises(ModelNotFound):
        api.load(model.sha1, store=store)


#: One features chunk that takes many seconds: 48 photos, 7 views each, at 640 px on Lite0.
SLOW_CHUNK = {
    **QUICK,
    "base": "efficientnet-lite0",
    "image_size": 640,
    "views": ["original", "mirrored", "center", "top-left", "top-right", "bottom-left", "bottom-right"],
}


def test_a_cancel_during_features_is_honoured_within_about_a_second(tmp_path: Path) -> None:
    """Not once per chunk: between images. (Measured against the chunk it interrupts.)"""
    csv = small_dataset(tmp_path / "set", per_label=16)
    store = LocalStore(tmp_path / "data")
    in_features = threading.Event()

    def watch(stage: str, total: int) -> Any:
        if stage == "features":
            in_features.set()
        return _Quiet()

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            api.train(str(csv), store=store, progress=watch, **SLOW_CHUNK)
        except Exception as e:
            outcome["error"] = e

    from model.api import Context
    from model.training.pipeline import prepare_recipe

    ctx = Context.open(store)
    sha1 = prepare_recipe(ctx, dict(SLOW_CHUNK), str(csv), None).sha1
    # The chunk's 336 base runs, timed uncancelled in a store of its own. First, so that both
    # runs find the base prepared at this size in this process: a cancel is then compared with
    # the work it saves, not with a loaded machine's one-off preparation.
    whole = time.monotonic()
    api.train(str(csv), store=LocalStore(tmp_path / "fresh"), **SLOW_CHUNK)
    whole = time.monotonic() - whole
    thread = threading.Thread(target=run)
    thread.start()
    assert in_features.wait(60)
    asked = time.monotonic()
    jobs.cancel(store, sha1)
    thread.join(120)
    took = time.monotonic() - asked
    assert str(outcome["error"]) == "cancelled on request"
    # The chunk (48 photos x 7 views, all in one chunk) stopped part-way: none of its feature
    # vectors was stored, as they are only when the chunk's base runs are done.
    assert store.list_refs("cache/features") == []
    # A cancel waits for one more image and the one-second progress beat, not for the chunk.
    assert took < whole / 2, f"the cancel took {took:.1f} s, a whole training {whole:.1f} s"


class _Quiet:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

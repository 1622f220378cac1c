"""A training whose server died or stopped resumes with no client asking, and gives the same bytes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from api_testing import LEASE_TTL, Api, Site, run_api, train_body

from model import api as python_api
from model.jobs import state as jobs
from model.lifecycle.catalog import STALLED_MESSAGE, model_state
from store import LocalStore

#: Slow enough in features (72 photos x 7 views at 448 px) to be stopped part-way.
SLOW = {
    "base": "efficientnet-lite0",
    "image_size": 448,
    "views": ["original", "mirrored", "center", "top-left", "top-right", "bottom-left", "bottom-right"],
}


def _env(site: Site) -> dict[str, str]:
    return {"FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}"}


def _start_and_wait_for_features(server: Api, body: dict[str, Any]) -> str:
    first = server.post("/train", json=body)
    assert first.status_code == 200 and first.json()["status"] == "new", first.text
    model = first.json()["model_sha1"]
    deadline = time.time() + 120
    while True:
        job = server.get(f"/models/{model}").json().get("job") or {}
        if (job.get("progress") or {}).get("stage") == "features" and job["progress"]["done"] > 0:
            return model
        assert time.time() < deadline, job
        time.sleep(0.1)


def _wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while not (found := check()):
        assert time.time() < deadline, what
        time.sleep(0.1)
    return found


def _reference(tmp_path: Path, site: Site, body: dict[str, Any]) -> dict[str, str]:
    """The same request, uninterrupted, in-process on a fresh store: the bytes to expect."""
    model = python_api.train(str(site.root / "train.csv"), store=tmp_path / "reference", **body["metadata"])
    status = jobs.read_status(LocalStore(tmp_path / "reference"), model.sha1) or {}
    return {"weights_sha1": status["weights_sha1"], "manifest_sha1": status["manifest_sha1"]}


def _ready_without_a_post(server: Api, model: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        # The manifest lands a moment before the ready record: wait for the record, which names
        # the weights.
        body = server.get(f"/models/{model}").json()
        return body if (body.get("job") or {}).get("status") == "ready" else None

    return _wait_until(ready, 180, f"{model} was not resumed")


def test_a_killed_server_s_training_is_resumed_by_the_next_server_with_the_same_bytes(
    tmp_path: Path, site: Site
) -> None:
    body = train_body(site, random_seed=71, **SLOW)
    with run_api(tmp_path, _env(site), workers=1) as first:
        model = _start_and_wait_for_features(first, body)
        os.killpg(first.process.pid, signal.SIGKILL)  # master and worker: no hook runs
        first.process.wait()
    store = LocalStore(tmp_path / "data")
    # Nobody renews the lease now: after LEASE_TTL the job reads as stalled, progress frozen.
    _wait_until(lambda: model_state(store, model).state == "stalled", 3 * LEASE_TTL, "never stalled")
    with run_api(tmp_path, _env(site), workers=1) as second:
        final = _ready_without_a_post(second, model)
        assert "resuming stalled training model=" + model in second.log()
    assert {k: final["job"][k] for k in ("weights_sha1", "manifest_sha1")} == _reference(tmp_path, site, body)


def test_a_gracefully_stopped_server_hands_its_training_over_at_once(tmp_path: Path, site: Site) -> None:
    body = train_body(site, random_seed=72, **SLOW)
    with run_api(tmp_path, _env(site), workers=1) as first:
        model = _start_and_wait_for_features(first, body)
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=60)
        store = LocalStore(tmp_path / "data")
        held = store.get_ref(jobs.lease_ref(model))
        assert held is not None and b'"owner": "handed-over"' in held  # not left to expire
        assert model_state(store, model).state == "stalled"
        assert "training handed over at stop model=" + model in first.log()
    with run_api(tmp_path, _env(site), workers=1) as second:
        # Its first round, at start: no LEASE_TTL to wait out.
        final = _ready_without_a_post(second, model)
    assert final["job"]["status"] == "ready"


def test_get_of_a_stalled_job_says_so_and_what_will_resume_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, with the resumer off, so that the stalled state stays to be looked at."""
    from handlers import app as app_module
    from model.config import Settings

    store = LocalStore(tmp_path / "data")
    model = "c" * 40
    jobs.write_status(
        store, model, "in_progress", owner="gone", progress={"stage": "features", "done": 64, "total": 72}
    )
    monkeypatch.setattr(app_module, "start_resumer", lambda _svc: None)
    client = app_module.create_app(
        Settings(data_dir=str(tmp_path / "data"), preload_base=False)
    ).test_client()
    body = client.get(f"/models/{model}").get_json()
    assert body["status"] == "stalled"
    assert body["message"] == STALLED_MESSAGE
    assert body["job"]["progress"] == {"stage": "features", "done": 64, "total": 72}
    row = client.get("/models").get_json()["models"][0]
    assert row["model_sha1"] == model and row["status"] == "stalled"

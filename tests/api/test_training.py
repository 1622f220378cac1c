"""Training through the API: one job per recipe across workers, polled anywhere, recovered after a kill."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from api_testing import LABELS, LEASE_TTL, Api, Site, poll_until_done, train_body
from PIL import Image

from model.jobs import state as jobs
from store import LocalStore, lease


def runs_of(api: Api, model_sha1: str) -> list[str]:
    """Run records in the store: one per training that finished."""
    return LocalStore(api.data_dir).list_refs(f"models/{model_sha1}/runs")


def starts_of(api: Api, model_sha1: str, pid: int | None = None) -> int:
    """Trainings of the model started according to the log (by one worker, if ``pid`` is given)."""
    lines = [line for line in api.log().splitlines() if f"training started model={model_sha1} " in line]
    return len([line for line in lines if pid is None or f" pid={pid}" in line])


def test_train_poll_ready_infer(api: Api, site: Site, trained_model: str) -> None:
    """The original client flow: train, poll with the same request, then label held-out images."""
    body = train_body(site)
    ready = api.post("/train", json=body).json()
    assert ready["model_sha1"] == trained_model
    assert ready["status"] == "ready"
    assert ready["labels"] == list(LABELS)
    for field in ("manifest_sha1", "weights_sha1"):
        assert api.get(f"/objects/{ready[field]}").status_code == 200
    for label in LABELS:
        r = api.post(
            "/infer",
            json={
                "model": {"uri": "", "sha1": trained_model},
                "image": {"url": f"{site.url}/infer/{label}.png"},
            },
        )
        assert r.status_code == 200, r.text
        probabilities = r.json()
        assert set(probabilities) == set(LABELS)
        assert abs(sum(probabilities.values()) - 1.0) < 1e-4
        assert max(probabilities, key=probabilities.get) == label


def test_first_request_answers_new_then_in_progress_then_ready(api: Api, site: Site) -> None:
    body = train_body(site, random_seed=21)
    first = api.post("/train", json=body)
    assert first.json()["status"] == "new"
    assert set(first.json()) == {"model_sha1", "status"}
    responses = poll_until_done(api, body)
    statuses = [r.json()["status"] for r in responses]
    assert statuses[-1] == "ready"
    assert set(statuses[:-1]) <= {"in_progress"}
    model = api.get(f"/models/{first.json()['model_sha1']}").json()
    assert model["status"] == "ready"
    assert model["manifest"]["model_sha1"] == first.json()["model_sha1"]
    assert model["recipe"]["random_seed"] == 21


def test_polling_is_answered_by_any_worker(api: Api, site: Site) -> None:
    body = train_body(site, random_seed=22)
    started = api.post("/train", json=body)
    assert started.json()["status"] == "new"
    trainer = int(started.headers["X-Worker-Pid"])
    pids: set[int] = set()
    answers: dict[int, set[str]] = {}
    deadline = time.time() + 240
    # Each request on a fresh connection, so the kernel spreads them over both workers.
    while time.time() < deadline:
        r = requests.post(api.url + "/train", json=body, timeout=60)
        pid = int(r.headers["X-Worker-Pid"])
        pids.add(pid)
        answers.setdefault(pid, set()).add(r.json()["status"])
        if r.json()["status"] == "ready" and len(pids) >= 2:
            break
        time.sleep(0.2)
    assert len(pids) >= 2, f"all polls answered by {pids}"
    others = [p for p in pids if p != trainer]
    assert others, "no poll answered by a worker other than the trainer"
    assert any("in_progress" in answers[p] or "ready" in answers[p] for p in others)
    assert starts_of(api, started.json()["model_sha1"]) == 1


def test_concurrent_identical_requests_start_one_training(api: Api, site: Site) -> None:
    body = train_body(site, random_seed=23)
    barrier = threading.Barrier(10)

    def post(_: int) -> requests.Response:
        barrier.wait()
        return requests.post(api.url + "/train", json=body, timeout=60)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(post, range(10)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["in_progress"] * 9 + ["new"], statuses
    model_sha1 = responses[0].json()["model_sha1"]
    assert {r.json()["model_sha1"] for r in responses} == {model_sha1}
    assert poll_until_done(api, body)[-1].json()["status"] == "ready"
    assert starts_of(api, model_sha1) == 1
    assert len(runs_of(api, model_sha1)) == 1


def _unseen_images_csv(site: Site, per_label: int = 16) -> str:
    """A CSV of new noise images (two labels), so that no store already holds them; its name."""
    rng = np.random.default_rng(24)
    (site.root / "unseen").mkdir(exist_ok=True)
    rows = []
    for label in ("dots", "stripes"):
        for i in range(per_label):
            out = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(out, format="PNG")
            (site.root / "unseen" / f"{label}{i}.png").write_bytes(out.getvalue())
            rows.append(f"unseen/{label}{i}.png,{label},{hashlib.sha1(out.getvalue()).hexdigest()}")
    (site.root / "unseen.csv").write_text("\n".join(rows) + "\n")
    return "unseen.csv"


def test_killed_worker_job_is_taken_over_after_lease_expiry(api: Api, site: Site) -> None:
    # An image size no other test uses, so no cached features shorten the job before the kill.
    body = train_body(site, csv=_unseen_images_csv(site), random_seed=24, image_size=192)
    # Images no other test has stored, served slowly (0.5 s each, 8 at a time): the job is
    # surely still fetching when its worker is killed.
    body["csv"]["url"] = body["csv"]["url"].replace(site.url, site.url + "/slow")
    started = api.post("/train", json=body)
    assert started.json()["status"] == "new"
    model_sha1 = started.json()["model_sha1"]
    victim = int(started.headers["X-Worker-Pid"])
    time.sleep(1.0)  # into the job: fetching images
    os.kill(victim, signal.SIGKILL)
    dead = lease.holder(LocalStore(api.data_dir), jobs.lease_ref(model_sha1))
    assert dead is not None and not dead.expired()

    # Nothing half-made is visible: no manifest, and the status still says in progress.
    model = api.get(f"/models/{model_sha1}").json()
    assert model["manifest"] is None
    assert model["status"] in ("new", "in_progress")

    answered_at: list[float] = []
    responses = poll_until_done(api, body, answered_at=answered_at)
    statuses = [r.json()["status"] for r in responses]
    assert statuses[-1] == "ready", responses[-1].json()
    # Exactly one takeover, by whichever came first once the dead worker's lease ran out (it
    # expires LEASE_TTL after its last renewal, up to LEASE_TTL/3 before the kill): a poll (it
    # answers "new") or a live worker's resumer (the poll sees "stalled", then "in_progress").
    assert statuses.count("new") <= 1
    assert all(answered_at[i] >= dead.expires_at for i, s in enumerate(statuses) if s in ("new", "stalled"))
    assert dead.expires_at - dead.acquired_at >= LEASE_TTL
    if "new" in statuses:
        takeover = int(responses[statuses.index("new")].headers["X-Worker-Pid"])
        assert takeover != victim and starts_of(api, model_sha1, takeover) == 1
    else:
        assert f"resuming stalled training model={model_sha1}" in api.log()
    # Two trainings: the victim's, and the one takeover; only the second finished.
    assert starts_of(api, model_sha1, victim) == 1
    assert starts_of(api, model_sha1) == 2
    assert len(runs_of(api, model_sha1)) == 1
    api.wait_for_workers(2)  # gunicorn replaced the dead worker


def test_training_failure_is_an_error_status(api: Api, site: Site) -> None:
    """A CSV whose image sha1 is wrong only shows when the images are fetched: status error, with the row."""
    body = train_body(site, "mismatch.csv", random_seed=25)
    final = poll_until_done(api, body)[-1].json()
    assert final["status"] == "error"
    source = (site.root / "mismatch.csv").read_text().split(",")[0]
    assert final["message"].startswith(f"1 image(s) do not match their CSV sha1: line 1 ({source}) has sha1 ")
    # The error is final: asking again reports it, and does not retrain.
    again = api.post("/train", json=body).json()
    assert again == final
    assert starts_of(api, final["model_sha1"]) == 1


def test_models_list(api: Api, site: Site, trained_model: str) -> None:
    models = api.get("/models").json()["models"]
    assert trained_model in [m["model_sha1"] for m in models]
    assert all(
        set(m)
        <= {
            "model_sha1",
            "status",
            "message",
            "manifest_sha1",
            "weights_sha1",
            "labels",
            "validation_accuracy",
            "error_kind",
            "attempt",
            "retry_after",
            "published",
            "progress",  # a job running now (schemathesis' fuzzing starts some)
        }
        for m in models
    ), [sorted(m) for m in models]
    assert len(api.get("/models?limit=1").json()["models"]) == 1

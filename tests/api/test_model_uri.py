"""model.uri through the API: publish on training, fetch by hash on inference, fenced to MODEL_URI_ALLOW."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from api_testing import REPO, Api, Site, poll_until_done, train_body

from model.identity.manifest import manifest_ref
from store import LocalStore


def test_training_publishes_to_model_uri(api: Api, site: Site) -> None:
    target = site.root / "published-by-api"
    body = {**train_body(site, random_seed=31), "model": {"uri": str(target)}}
    final = poll_until_done(api, body)[-1].json()
    assert final["status"] == "ready", final
    assert final["published"]["uri"] == str(target)
    assert final["published"]["status"] in ("in_progress", "ready")
    # The copy runs after the model is ready: wait for its record to say it is done.
    deadline = time.time() + 60
    while final["published"]["status"] != "ready" and time.time() < deadline:
        time.sleep(0.5)
        final = api.post("/train", json=body).json()  # the same request: the job's record
    assert final["published"]["status"] == "ready", final
    assert LocalStore(target).get_ref(manifest_ref(final["model_sha1"])) is not None


def test_model_uri_outside_import_root_is_refused(api: Api, site: Site, tmp_path) -> None:
    # The model trains; its publication there is refused, with the reason, and nothing is written.
    body = {**train_body(site, random_seed=32), "model": {"uri": str(tmp_path / "elsewhere")}}
    r = api.post("/train", json=body)
    assert r.status_code == 200
    assert r.json()["published"] == {
        "uri": str(tmp_path / "elsewhere"),
        "status": "refused",
        "message": f"model.uri {tmp_path / 'elsewhere'} is not an allowed publish target (MODEL_URI_ALLOW)",
    }
    final = poll_until_done(api, body)[-1].json()
    assert final["status"] == "ready" and final["published"]["status"] == "refused"
    assert not (tmp_path / "elsewhere").exists()


def test_inference_fetches_an_unknown_model_from_its_uri(api: Api, site: Site, tmp_path) -> None:
    # A model trained on another "machine" (a CLI process with its own store), published under IMPORT_ROOT.
    other = site.root / "other-machine"
    env = {"DATA_DIR": str(tmp_path / "cli-data"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "handlers.cli",
            "train",
            str(site.root / "train.csv"),
            "--image-size",
            "96",
            "--seed",
            "77",
            "--publish",
            str(other),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    model = json.loads(out)["model_sha1"]
    image = {"url": f"{site.url}/infer/dots.png"}
    unknown = api.post("/infer", json={"model": {"sha1": model}, "image": image})
    assert unknown.status_code == 404
    fetched = api.post("/infer", json={"model": {"sha1": model, "uri": str(other)}, "image": image})
    assert fetched.status_code == 200, fetched.text
    assert abs(sum(fetched.json().values()) - 1) < 1e-4
    # Now it is held locally: no uri needed any more.
    assert api.post("/infer", json={"model": {"sha1": model}, "image": image}).status_code == 200


def test_the_2019_bodies_train_and_label_as_they_did(api: Api, site: Site) -> None:
    """The 2019 README's train-tiny.json and infer.json, with this site's CSV and image in place of
    GitHub's: the same fields, the same statuses; the gs:// target (not allowed here) is recorded
    as a refused publication instead of failing the request."""
    train_2019 = {
        "metadata": {"random_seed": 1234},
        "model": {"uri": "gs://test/1"},
        "csv": {"url": f"{site.url}/train.csv", "sha1": site.csv_sha1("train.csv")},
    }
    answers = [r.json() for r in poll_until_done(api, train_2019)]
    assert answers[0]["status"] in ("new", "in_progress", "ready")
    assert {a["status"] for a in answers[1:-1]} <= {"in_progress"} and answers[-1]["status"] == "ready"
    assert answers[-1]["model_sha1"] == "7aa64230f910aa6116f6ddb9966dc13b3307f156"  # make demo's model
    assert answers[-1]["published"] == {
        "uri": "gs://test/1",
        "status": "refused",
        "message": "model.uri gs://test/1 is not an allowed publish target (MODEL_URI_ALLOW)",
    }
    infer_2019 = {
        "model": {"uri": "gs://static-transfer-learning/my-model", "sha1": answers[-1]["model_sha1"]},
        "image": {"url": f"{site.url}/infer/dots.png"},
    }
    labelled = api.post("/infer", json=infer_2019)
    assert labelled.status_code == 200, labelled.text
    assert max(labelled.json(), key=labelled.json().get) == "dots"

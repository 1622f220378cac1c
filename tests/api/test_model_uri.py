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
    body = {**train_body(site, random_seed=32), "model": {"uri": str(tmp_path / "elsewhere")}}
    r = api.post("/train", json=body)
    assert r.status_code == 403
    assert r.json()["error"] == (
        f"model.uri {tmp_path / 'elsewhere'} is not an allowed publish target (MODEL_URI_ALLOW)"
    )


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
            "--epochs",
            "5",
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

"""model.uri: only targets the operator allowed, and a publish outcome kept apart from training."""

from __future__ import annotations

import time

import pytest
from api_testing import TOKEN, Api, Site, error_of, poll_until_done, train_body
from conftest import ALLOWED_BUCKET, Trap

from model.identity.manifest import manifest_ref
from store import LocalStore


def refused(uri: str) -> dict:
    """A training's publication record for a target the operator did not allow."""
    reason = f"model.uri {uri} is not an allowed publish target (MODEL_URI_ALLOW)"
    return {"uri": uri, "status": "refused", "message": reason}


@pytest.mark.parametrize("uri", ["ipfs://127.0.0.1:{trap}", "s3://any-bucket/p", "gs://other/1", "/tmp/x"])
def test_unlisted_targets_are_refused_before_any_connection(
    api: Api, site: Site, trap: Trap, uri: str
) -> None:
    # The model trains (a 2019 client gets its model_sha1 and statuses); the publication is refused.
    uri = uri.format(trap=trap.port)
    body = {**train_body(site, random_seed=41), "model": {"uri": uri}}
    answer = api.post("/train", json=body)
    assert answer.status_code == 200 and answer.json()["status"] in ("new", "in_progress", "ready")
    assert answer.json()["published"] == refused(uri)
    model = answer.json()["model_sha1"]
    assert refused(uri) in [
        {k: p[k] for k in ("uri", "status", "message")}
        for p in api.get(f"/models/{model}").json()["publications"]
    ]
    assert f"model {model}: not publishing to {uri}: model.uri {uri} is not an allowed" in api.log()
    infer = {"model": {"sha1": "a" * 40, "uri": uri}, "image": {"url": f"{site.url}/infer/dots.png"}}
    assert error_of(api.post("/infer", json=infer), 403) == (
        f"model.uri {uri} is not an allowed publish target (MODEL_URI_ALLOW)"
    )
    assert trap.requests == []


def test_a_lookalike_of_an_allowed_prefix_is_refused(api: Api, site: Site) -> None:
    for uri in (f"{ALLOWED_BUCKET}-evil/x", "s3://allowed-bucket/modelsX", str(site.root / "published/../x")):
        body = {**train_body(site, random_seed=41), "model": {"uri": uri}}
        assert api.post("/train", json=body).json()["published"] == refused(uri)


def test_by_default_no_target_is_allowed(strict_api: Api) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rows = (
        b"http://127.0.0.1:9/a.png,cat," + b"a" * 40 + b"\nhttp://127.0.0.1:9/b.png,dog," + b"b" * 40 + b"\n"
    )
    csv_sha1 = strict_api.post("/objects", files={"file": ("x.csv", rows)}, headers=auth).json()["sha1"]
    body = {"csv": {"sha1": csv_sha1}, "model": {"uri": "ipfs://127.0.0.1:5001"}}
    r = strict_api.post("/train", json=body, headers=auth)
    assert r.status_code == 200 and r.json()["published"] == refused("ipfs://127.0.0.1:5001"), r.text


def test_the_2019_ipfs_form_is_refused_with_what_to_do(api: Api, site: Site) -> None:
    uri = "ipfs://QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG/my-model"
    body = {**train_body(site, random_seed=42), "model": {"uri": uri}}
    assert error_of(api.post("/train", json=body), 400) == (
        f"model.uri {uri} is the 2019 form ipfs://<CID>/<name>, which names content, not a node: "
        "publish with ipfs:// and fetch with the ipfs:///<CID> that publishing returns"
    )


def _poll_publication(api: Api, body: dict, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while True:
        status = api.post("/train", json=body).json()
        if status["status"] == "ready" and status["published"]["status"] in ("ready", "error"):
            return status
        assert time.time() < deadline, status
        time.sleep(0.3)


def test_a_failed_publish_leaves_the_model_ready(api: Api, site: Site) -> None:
    # The 2019 body's gs://test/1: no credentials, no network. It used to turn the job into "error" forever.
    body = {**train_body(site, random_seed=43), "model": {"uri": "gs://test/1"}}
    status = _poll_publication(api, body)
    model = status["model_sha1"]
    assert status["published"]["uri"] == "gs://test/1"
    assert status["published"]["status"] == "error"
    assert status["published"]["error_kind"] == "transient"  # the world's fault: retried later
    assert not status["published"]["message"].startswith("internal error"), status["published"]
    assert [m["status"] for m in api.get("/models").json()["models"] if m["model_sha1"] == model] == ["ready"]
    described = api.get(f"/models/{model}").json()
    assert described["status"] == "ready"
    assert [p["status"] for p in described["publications"]] == ["error"]
    infer = {"model": {"sha1": model}, "image": {"url": f"{site.url}/infer/dots.png"}}
    assert api.post("/infer", json=infer).status_code == 200
    # The world failed, not the code: one log line naming the store, no traceback.
    assert "publishing model " + model + " to gs://test/1 failed: BackendUnavailable: " in api.log()
    assert "Traceback" not in api.log()


def test_a_second_target_for_the_same_recipe_is_honoured(api: Api, site: Site) -> None:
    first, second = site.root / "published" / "a", site.root / "published" / "b"
    body_a = {**train_body(site, random_seed=44), "model": {"uri": str(first)}}
    body_b = {**train_body(site, random_seed=44), "model": {"uri": str(second)}}
    started = api.post("/train", json=body_a).json()
    # While the first is under way (or already done), another client names another target.
    assert api.post("/train", json=body_b).json()["model_sha1"] == started["model_sha1"]
    for body, target in ((body_a, first), (body_b, second)):
        status = _poll_publication(api, body)
        assert status["published"]["status"] == "ready", status
        assert LocalStore(target).get_ref(manifest_ref(status["model_sha1"])) is not None
    assert poll_until_done(api, body_a)[-1].json()["status"] == "ready"

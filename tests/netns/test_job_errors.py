"""Failed jobs: the world's errors retry, the data's stay, DELETE clears or forgets; corrupt objects are rebuilt."""

from __future__ import annotations

import hashlib
import io
import time

import requests
from api_testing import Api, Site, error_of, poll_until_done, train_body
from PIL import Image

from model.identity.manifest import manifest_sha1
from store import LocalStore


def _csv_with_missing_image(site: Site, name: str) -> tuple[dict, bytes]:
    """The example CSV plus one row whose image (new bytes, so no cache has it) is not served yet."""
    image = io.BytesIO()
    Image.new("RGB", (40, 40), (7, 99, len(name))).save(image, format="PNG")
    sha1 = hashlib.sha1(image.getvalue()).hexdigest()
    rows = (site.root / "train.csv").read_text() + f"late/{name}.png,dots,{sha1}\n"
    (site.root / f"{name}.csv").write_text(rows)
    return train_body(site, csv=f"{name}.csv", random_seed=51), image.getvalue()


def test_a_network_error_retries_when_the_request_comes_again(api: Api, site: Site) -> None:
    body, image = _csv_with_missing_image(site, "retry")
    failed = poll_until_done(api, body)[-1].json()
    assert failed["status"] == "error"
    assert failed["error_kind"] == "transient" and failed["attempt"] == 1
    assert "HTTP 404" in failed["message"]
    (site.root / "late").mkdir(exist_ok=True)
    (site.root / "late" / "retry.png").write_bytes(image)
    time.sleep(1.2)  # RETRY_BACKOFF=1 on this server
    final = poll_until_done(api, body)[-1].json()
    assert final["status"] == "ready", final
    assert final["attempt"] == 2


def test_a_data_error_stays_and_delete_clears_it(api: Api, site: Site) -> None:
    body = train_body(site, csv="mismatch.csv", random_seed=52)
    failed = poll_until_done(api, body)[-1].json()
    assert failed["status"] == "error" and failed["error_kind"] == "permanent"
    time.sleep(1.2)
    assert api.post("/train", json=body).json() == failed  # same inputs, same failure: no rerun
    model = failed["model_sha1"]
    cleared = api.delete(f"/models/{model}")
    assert cleared.status_code == 200 and cleared.json()["cleared"] is True
    assert api.post("/train", json=body).json()["status"] == "new"  # started afresh
    assert poll_until_done(api, body)[-1].json()["status"] == "error"


def test_delete_forgets_a_ready_model_refuses_unknown_ones_and_needs_the_token(
    api: Api, strict_api: Api, site: Site
) -> None:
    body = train_body(site, random_seed=53)
    ready = poll_until_done(api, body)[-1].json()
    assert ready["status"] == "ready", ready
    model = ready["model_sha1"]
    deleted = api.delete(f"/models/{model}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert deleted.json()["status"] == "ready" and "cleared" not in deleted.json()
    assert error_of(api.get(f"/models/{model}"), 404) == f"unknown model {model}"
    assert model not in [m["model_sha1"] for m in api.get("/models").json()["models"]]
    # Its objects are still there (gc decides), so the same request rebuilds it from caches.
    assert api.get(f"/objects/{ready['weights_sha1']}").status_code == 200
    assert api.post("/train", json=body).json()["status"] == "new"
    assert poll_until_done(api, body)[-1].json()["weights_sha1"] == ready["weights_sha1"]
    assert error_of(api.delete(f"/models/{'b' * 40}"), 404) == f"unknown model {'b' * 40}"
    assert requests.delete(f"{strict_api.url}/models/{'b' * 40}", timeout=30).status_code == 401
    assert strict_api.delete(f"/models/{'b' * 40}").status_code == 404  # with the token


def test_a_corrupt_manifest_is_reported_and_rebuilt(api: Api, site: Site) -> None:
    body = train_body(site, random_seed=53)
    model = poll_until_done(api, body)[-1].json()["model_sha1"]
    store = LocalStore(api.data_dir)
    msha1 = manifest_sha1(store, model)
    assert msha1 is not None
    good = store.object_path(msha1).read_bytes()
    store.object_path(msha1).write_bytes(good.replace(b'"', b"'", 1))
    described = api.get(f"/models/{model}").json()
    assert described["status"] == "error" and described["manifest"] is None
    assert "does not match its hash" in described["message"]
    final = poll_until_done(api, body)[-1].json()  # not "ready" from the status alone: rebuilt
    assert final["status"] == "ready"
    assert store.object_path(msha1).read_bytes() == good
    assert api.get(f"/models/{model}").json()["manifest"]["model_sha1"] == model

"""GET /objects, /healthz, the OpenAPI document and the Swagger UI page."""

from __future__ import annotations

import hashlib
import re

import yaml
from api_testing import Api, Site, error_of
from openapi_spec_validator import validate as validate_spec

from model.identity.recipe import HYPERPARAMETERS
from store import LocalStore


def test_object_streamed_verified(api: Api, site: Site, trained_model: str) -> None:
    data = (site.root / "train.csv").read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    r = api.get(f"/objects/{sha1}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["ETag"] == f'"{sha1}"'
    assert api.get(f"/objects/{sha1}", headers={"If-None-Match": f'"{sha1}"'}).status_code == 304


def test_corrupt_object_is_not_served(api: Api) -> None:
    store = LocalStore(api.data_dir)
    sha1 = store.put(b"the original bytes")
    store.object_path(sha1).write_bytes(b"tampered bytes")
    r = api.get(f"/objects/{sha1}")
    # The store's fault, not the client's: a 500, but JSON and without the store's path.
    assert error_of(r, 500) == "store error (HashMismatch); see the server log"
    assert str(api.data_dir) not in r.text


def test_model_while_only_recipe_known(api: Api, trained_model: str) -> None:
    r = api.get(f"/models/{trained_model}")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["job"]["status"] == "ready"
    assert body["manifest"]["outputs"]["weights"]["sha1"] == body["job"]["weights_sha1"]
    assert body["recipe"] == body["manifest"]["recipe"]


def test_healthz(api: Api) -> None:
    r = api.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "pid": int(r.headers["X-Worker-Pid"])}


def test_openapi_document(api: Api) -> None:
    as_json = api.get("/api/openapi.json").json()
    as_yaml = yaml.safe_load(api.get("/api/openapi.yaml").text)
    assert as_json == as_yaml
    validate_spec(as_json)
    assert {"/train", "/infer", "/models", "/models/{model_sha1}", "/objects/{sha1}", "/healthz"} <= set(
        as_json["paths"]
    )


def test_openapi_bounds_match_the_recipe(api: Api) -> None:
    """The documented hyperparameter bounds are the ones the pipeline enforces."""
    metadata = api.get("/api/openapi.json").json()["components"]["schemas"]["Metadata"]["properties"]
    for name, (kind, lo, hi) in HYPERPARAMETERS.items():
        schema = metadata[name]
        assert schema["type"] == ("integer" if kind is int else "number"), name
        assert schema["maximum"] == hi, name
        # image_size also takes 0 ("native size"), below its range.
        assert schema["minimum"] == (0 if name == "image_size" else lo), name


def test_swagger_ui_is_self_contained(api: Api) -> None:
    page = api.get("/api/doc")
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert not re.search(r"""(src|href)=["']https?://""", page.text), (
        "the page must not load anything from outside"
    )
    for asset in re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text):
        assert api.get(asset).status_code == 200, asset


def test_an_upload_may_declare_its_sha1_and_nothing_else(api: Api) -> None:
    data = b"an upload that says what it is"
    sha1 = hashlib.sha1(data).hexdigest()
    ok = api.post("/objects", files={"file": ("a.bin", data)}, data={"sha1": sha1})
    assert (ok.status_code, ok.json()["sha1"]) == (201, sha1)
    other = b"and one that lies about it"
    wrong = api.post("/objects", files={"file": ("b.bin", other)}, data={"sha1": "0" * 40})
    assert error_of(wrong, 422) == (
        f"the file's sha1 is {hashlib.sha1(other).hexdigest()}, not the declared {'0' * 40}; nothing was stored"
    )
    assert not LocalStore(api.data_dir).has(hashlib.sha1(other).hexdigest())
    extra = api.post("/objects", files={"file": ("c.bin", other)}, data={"name": "c", "tag": "x"})
    assert error_of(extra, 400) == "unknown field: name, tag (send 'file', and optionally its 'sha1')"
    assert error_of(api.post("/objects", files={"file": ("d.bin", other)}, data={"sha1": "xyz"}), 400) == (
        "sha1 must be a sha1 (40 lowercase hex digits), got 'xyz'"
    )


def test_the_upload_limit_counts_the_files_bytes(api: Api) -> None:
    """MAX_DOWNLOAD_BYTES (1,000,000 here) is the file's limit, not the body's with its framing."""
    from api_testing import MAX_DOWNLOAD_BYTES

    at_limit = bytes(MAX_DOWNLOAD_BYTES)
    assert api.post("/objects", files={"file": ("a.bin", at_limit)}).status_code == 201
    over = b"\x01" * (MAX_DOWNLOAD_BYTES + 1)
    assert error_of(api.post("/objects", files={"file": ("b.bin", over)}), 413) == (
        "the file is larger than the limit (MAX_DOWNLOAD_BYTES)"
    )
    assert not LocalStore(api.data_dir).has(hashlib.sha1(over).hexdigest())

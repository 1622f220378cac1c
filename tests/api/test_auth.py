"""With API_TOKEN set, everything but health and docs needs the bearer token."""

from __future__ import annotations

import pytest
import requests
from api_testing import TOKEN, Api, error_of

PROTECTED = [
    ("POST", "/train"),
    ("POST", "/infer"),
    ("GET", "/models"),
    ("GET", "/models/" + "a" * 40),
    ("GET", "/objects/" + "a" * 40),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token(strict_api: Api, method: str, path: str) -> None:
    # Checked before the body is even read: garbage without a token is a 401, not a 400.
    r = requests.request(method, strict_api.url + path, data="{", timeout=30)
    assert error_of(r, 401) == "missing bearer token: send Authorization: Bearer <API_TOKEN>"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer"])
def test_wrong_token(strict_api: Api, header: str) -> None:
    r = requests.get(strict_api.url + "/models", headers={"Authorization": header}, timeout=30)
    assert r.status_code == 401
    assert r.json()["error"] in (
        "invalid bearer token",
        "missing bearer token: send Authorization: Bearer <API_TOKEN>",
    )


def test_right_token(strict_api: Api) -> None:
    r = requests.get(strict_api.url + "/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200
    assert r.json() == {"models": []}
    r = strict_api.post("/train", json={})  # the fixture sends the token
    assert error_of(r, 400) == "request body needs exactly one of: csv, zip, folder"


@pytest.mark.parametrize("path", ["/healthz", "/api/doc", "/api/openapi.json", "/api/openapi.yaml"])
def test_open_without_token(strict_api: Api, path: str) -> None:
    assert requests.get(strict_api.url + path, timeout=30).status_code == 200

"""The web surface against a hostile page: redirects, headers, cross-site writes, DNS rebinding,
sign-in guessing. Each request is the one a red-team run sent to `stl serve` (gunicorn)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from api_testing import TOKEN, Api, error_of, run_api

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The default configuration: no API_TOKEN (one extra origin listed, for that test)."""
    env = {"ALLOWED_ORIGINS": "https://partner.example"}
    with run_api(tmp_path_factory.mktemp("open"), env, workers=1) as server:
        yield server


def _login(api: Api, next_: str, **kw: object) -> requests.Response:
    return requests.post(
        f"{api.url}/ui/login",
        params={"next": next_},
        data={"token": TOKEN},
        allow_redirects=False,
        timeout=30,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/phish",
        "//evil.example/x",
        "javascript:alert(1)",
        "/\\evil.example",
        "///evil.example",
    ],
)
def test_sign_in_never_redirects_off_this_server(strict_api: Api, target: str) -> None:
    r = _login(strict_api, target)
    assert r.status_code == 302
    assert r.headers["Location"] == "/"


def test_sign_in_returns_to_a_local_page(strict_api: Api) -> None:
    r = _login(strict_api, "/ui/models?page=2")
    assert r.status_code == 302 and r.headers["Location"] == "/ui/models?page=2"
    assert "Secure" not in r.headers["Set-Cookie"]  # plain HTTP, no proxy said otherwise


def test_behind_a_trusted_tls_proxy_the_cookie_is_secure(strict_api: Api) -> None:
    # The peer (127.0.0.1) is in FORWARDED_ALLOW_IPS by default, as gunicorn's own default.
    r = _login(strict_api, "/", headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 302 and "; Secure" in r.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "path", ["/", "/ui/models/" + "a" * 40, "/ui/login", "/api/doc", "/models", "/livez"]
)
def test_every_response_carries_the_security_headers(open_api: Api, path: str) -> None:
    r = requests.get(open_api.url + path, timeout=30)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "same-origin"
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
    if path != "/api/doc":
        assert "style-src 'self';" in csp and "unsafe-inline" not in csp


def test_swagger_ui_runs_no_inline_script(open_api: Api) -> None:
    page = requests.get(open_api.url + "/api/doc", timeout=30).text
    assert "<script>" not in page and 'src="/api/doc/init.js"' in page
    init = requests.get(open_api.url + "/api/doc/init.js", timeout=30)
    assert init.status_code == 200 and "SwaggerUIBundle(" in init.text


def test_objects_download_as_attachments(open_api: Api) -> None:
    html = b"<html><script>alert(document.cookie)</script></html>"
    stored = requests.post(open_api.url + "/objects", files={"file": ("x.html", html)}, timeout=30)
    assert stored.status_code == 201, stored.text
    sha1 = stored.json()["sha1"]
    r = requests.get(f"{open_api.url}/objects/{sha1}", timeout=30)
    assert r.content == html
    assert r.headers["Content-Disposition"] == f"attachment; filename={sha1}"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_a_cross_site_cancel_is_refused_without_a_token(open_api: Api) -> None:
    model = "b" * 40
    r = requests.post(
        f"{open_api.url}/models/{model}/cancel",
        headers={"Origin": EVIL, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert error_of(r, 403) == (
        f"cross-site request refused: origin {EVIL} is not this service's (ALLOWED_ORIGINS)"
    )
    # The same request from no page at all (curl, the 2019 clients) or from ours goes through.
    assert requests.post(f"{open_api.url}/models/{model}/cancel", timeout=30).status_code == 404
    ours = requests.post(
        f"{open_api.url}/models/{model}/cancel", headers={"Origin": open_api.url}, timeout=30
    )
    assert ours.status_code == 404


def test_a_cross_site_upload_stores_nothing(open_api: Api, tmp_path: Path) -> None:
    data = b"uploaded from another site's page\n"
    r = requests.post(
        open_api.url + "/objects",
        files={"file": ("a.txt", io.BytesIO(data))},
        headers={"Origin": EVIL},
        timeout=30,
    )
    assert r.status_code == 403
    import hashlib

    assert (
        requests.get(f"{open_api.url}/objects/{hashlib.sha1(data).hexdigest()}", timeout=30).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Referer": f"{EVIL}/page.html"}, 403),  # no Origin: the Referer tells
        ({"Origin": "null"}, 403),  # a sandboxed frame or a local file
        ({"Origin": "https://partner.example"}, 404),  # listed in ALLOWED_ORIGINS
    ],
)
def test_origin_rules(open_api: Api, headers: dict[str, str], status: int) -> None:
    r = requests.delete(f"{open_api.url}/models/{'c' * 40}", headers=headers, timeout=30)
    assert r.status_code == status, r.text


def test_a_rebinding_host_is_refused(open_api: Api) -> None:
    r = requests.get(open_api.url + "/models", headers={"Host": "attacker.example:8799"}, timeout=30)
    assert (
        error_of(r, 400) == "host 'attacker.example:8799' is not one this service answers to (ALLOWED_HOSTS)"
    )
    port = open_api.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert requests.get(open_api.url + "/models", headers={"Host": host}, timeout=30).status_code == 200


def test_allowed_hosts_star_opts_out(tmp_path: Path) -> None:
    with run_api(tmp_path, {"ALLOWED_HOSTS": "*"}, workers=1) as server:
        r = requests.get(server.url + "/models", headers={"Host": "api:8080"}, timeout=30)
        assert r.status_code == 200


def test_failed_sign_ins_are_throttled_per_address(tmp_path: Path) -> None:
    with run_api(tmp_path, {}, workers=1, token=TOKEN) as server:
        for _ in range(5):
            wrong = requests.post(f"{server.url}/ui/login", data={"token": "guess"}, timeout=30)
            assert wrong.status_code == 200 and "not the server&#39;s API token" in wrong.text
        locked = requests.post(f"{server.url}/ui/login", data={"token": "guess"}, timeout=30)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert "too many failed sign-ins from 127.0.0.1" in locked.text
        # While locked out, the right token does not get in either (guessing would go on).
        right = requests.post(
            f"{server.url}/ui/login", data={"token": TOKEN}, allow_redirects=False, timeout=30
        )
        assert right.status_code == 429
        bearer = requests.get(
            f"{server.url}/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert bearer.status_code == 429 and "Retry-After" in bearer.headers

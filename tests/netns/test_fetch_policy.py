"""The service refuses to fetch from non-public addresses (SSRF) unless FETCH_ALLOW_HOSTS exempts them.

The CSV of a train request is fetched during the request, so its URL shows the
policy at work without training anything.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from api_testing import Api, Site, error_of, train_body

METADATA_URL = "http://169.254.169.254/latest/meta-data/"


def csv_request(url: str) -> dict:
    return {"metadata": {"random_seed": 1}, "csv": {"url": url}}


@pytest.mark.parametrize(
    ("url", "address"),
    [
        (METADATA_URL, "169.254.169.254"),
        ("http://10.1.2.3/train.csv", "10.1.2.3"),
        ("http://192.168.0.1/train.csv", "192.168.0.1"),
        ("http://224.0.0.1/train.csv", "224.0.0.1"),
        ("http://0.0.0.0:9/train.csv", "0.0.0.0"),
        ("http://[::1]:9/train.csv", "::1"),
        ("http://[fe80::1]/train.csv", "fe80::1"),
        ("http://[::ffff:127.0.0.1]/train.csv", "::ffff:7f00:1"),
        ("http://2130706433:9/train.csv", "127.0.0.1"),  # 127.0.0.1 written as one number
    ],
)
def test_non_public_addresses_refused(api: Api, url: str, address: str) -> None:
    message = error_of(api.post("/train", json=csv_request(url)), 403)
    assert message.startswith(f"refusing to fetch {url}: ")
    assert f"resolves to non-public address {address}" in message


def test_allow_list_is_per_host_and_port(api: Api, site: Site) -> None:
    # 127.0.0.1:<file server> is exempt; the same address on another port is not.
    other = f"http://127.0.0.1:{int(api.url.rsplit(':', 1)[1])}/healthz"
    message = error_of(api.post("/train", json=csv_request(other)), 403)
    port = int(api.url.rsplit(":", 1)[1])
    assert message == (
        f"refusing to fetch {other}: 127.0.0.1 resolves to non-public address 127.0.0.1, "
        f"and FETCH_ALLOW_HOSTS does not list 127.0.0.1:{port}"
    )


@pytest.mark.parametrize("target", [METADATA_URL, "http://127.0.0.1:9/x.csv", "http://10.0.0.1/x.csv"])
def test_redirect_to_private_address_refused(api: Api, site: Site, target: str) -> None:
    # The first hop is an allowed host; the redirect it answers with is checked again.
    url = f"{site.url}/redirect?to={quote(target, safe='')}"
    message = error_of(api.post("/train", json=csv_request(url)), 403)
    assert message.startswith(f"refusing to fetch {target}: ")


def test_redirect_to_allowed_host_followed(api: Api, site: Site) -> None:
    url = f"{site.url}/redirect?to={quote(site.url + '/bad.csv', safe='')}"
    # Fetched (through the redirect) and parsed: the CSV's own error proves the bytes arrived.
    message = error_of(api.post("/train", json=csv_request(url)), 422)
    assert message.startswith("CSV line 1: no sha1 for images/dots/000.png")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/train.csv", "only http(s) URLs are allowed: ftp://example.com/train.csv"),
        ("gopher://127.0.0.1:70/", "only http(s) URLs are allowed: gopher://127.0.0.1:70/"),
    ],
)
def test_other_schemes_refused(api: Api, url: str, message: str) -> None:
    assert error_of(api.post("/train", json=csv_request(url)), 403) == message


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "file:///etc/passwd", "../../../../etc/passwd", "images/../../x"]
)
def test_paths_outside_import_root_refused(api: Api, site: Site, path: str) -> None:
    message = error_of(api.post("/train", json=csv_request(path)), 403)
    assert message.startswith(f"path outside the import root {site.root.resolve()} (IMPORT_ROOT): ")


def test_relative_path_under_import_root(api: Api, site: Site, trained_model: str) -> None:
    # The same recipe by path instead of URL: the model's name does not depend on where the CSV came from.
    body = train_body(site)
    body["csv"]["url"] = "train.csv"
    r = api.post("/train", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model_sha1"] == trained_model
    assert r.json()["status"] == "ready"


def test_loopback_refused_without_allow_hosts(strict_api: Api, site: Site) -> None:
    # The very server that the other instance is allowed to use.
    url = f"{site.url}/train.csv"
    message = error_of(strict_api.post("/train", json=csv_request(url)), 403)
    assert message == (
        f"refusing to fetch {url}: 127.0.0.1 resolves to non-public address 127.0.0.1, "
        f"and FETCH_ALLOW_HOSTS does not list 127.0.0.1:{site.port}"
    )


def test_paths_refused_without_import_root(strict_api: Api) -> None:
    message = error_of(strict_api.post("/train", json=csv_request("train.csv")), 403)
    assert message == (
        "local paths are not allowed: train.csv (the server reads its own files only below IMPORT_ROOT, "
        "which is not set: upload the file, or give an http(s) URL)"
    )

"""SSRF holes found by trying as a hostile user would; each request here used to reach a host it must not.

Run with loopback only (tests/test_loopback_namespace.py). A ``trap`` server
stands for the host an attacker aims at: it must see no request at all.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from urllib.parse import quote, urlsplit

import pytest
from api_testing import TOKEN, Api, Site, error_of
from conftest import Trap

from model.data.fetch import FetchPolicy, fetch_bytes
from model.errors import FetchError, FetchRefused


def train_csv(api: Api, url: str, token: str = "") -> object:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return api.post("/train", json={"metadata": {"random_seed": 1}, "csv": {"url": url}}, headers=headers)


def test_backslash_cannot_smuggle_another_port(api: Api, site: Site, trap: Trap) -> None:
    # urlparse saw host 127.0.0.1:<site> (allowed); requests connected to <trap>.
    url = f"http://127.0.0.1:{trap.port}\\@127.0.0.1:{site.port}/train.csv"
    message = error_of(train_csv(api, url), 400)
    assert message == f"URL contains a backslash, whitespace or control character: {url!r}"
    redirect = f"{site.url}/redirect?to={quote(url, safe='')}"
    assert error_of(train_csv(api, redirect), 400) == message
    assert trap.requests == []


def test_backslash_cannot_reach_the_metadata_address(strict_api: Api) -> None:
    url = "http://169.254.169.254\\@1.1.1.1/"
    assert error_of(train_csv(strict_api, url, TOKEN), 400) == (
        f"URL contains a backslash, whitespace or control character: {url!r}"
    )


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("http://100.100.100.200/latest/meta-data/", "100.100.100.200"),  # a cloud metadata address
        ("http://100.64.0.1/x.csv", "100.64.0.1"),
        ("http://[2002:7f00:1::]/x.csv", "2002:7f00:1:: (wraps 127.0.0.1)"),  # 6to4 around loopback
        ("http://[2002:a9fe:a9fe::]/x.csv", "2002:a9fe:a9fe:: (wraps 169.254.169.254)"),
        ("http://[64:ff9b::a9fe:a9fe]/x.csv", "64:ff9b::a9fe:a9fe (wraps 169.254.169.254)"),  # NAT64
        ("http://[64:ff9b::a00:1]/x.csv", "64:ff9b::a00:1 (wraps 10.0.0.1)"),
    ],
)
def test_special_purpose_ranges_are_not_public(strict_api: Api, url: str, detail: str) -> None:
    host = urlsplit(url).hostname
    port = urlsplit(url).port or 80
    allow = host if ":" in host else f"{host}:{port}"
    assert error_of(train_csv(strict_api, url, TOKEN), 403) == (
        f"refusing to fetch {url}: {host} resolves to non-public address {detail}, "
        f"and FETCH_ALLOW_HOSTS does not list {allow}"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com:99999/x.csv", "URL port must be a number from 1 to 65535, got '99999': {url}"),
        ("http://example.com:0/x.csv", "URL port must be a number from 1 to 65535, got '0': {url}"),
        ("http://user:pw@example.com/x.csv", "URLs with user information (user@host) are not allowed: {url}"),
        ("http://exa mple.com/x.csv", "URL contains a backslash, whitespace or control character: {url!r}"),
        ("http://[::1/x.csv", "unclosed '[' in the URL's host: {url}"),
    ],
)
def test_malformed_urls_are_400(strict_api: Api, url: str, message: str) -> None:
    assert error_of(train_csv(strict_api, url, TOKEN), 400) == message.format(url=url)


def test_a_trickling_server_is_cut_at_the_download_deadline(site: Site) -> None:
    # /trickle sends a byte every 0.2 s: every read is well inside the timeout, the download is not.
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^timed out after 2s fetching "):
        fetch_bytes(f"{site.url}/trickle", FetchPolicy(timeout=2))
    assert time.monotonic() - started < 3.5


def test_the_service_applies_the_deadline_per_download(api: Api, site: Site) -> None:
    # api runs with HTTP_TIMEOUT=3; /trickle sends a byte every 0.2 s (it used to hold a thread for minutes).
    started = time.monotonic()
    message = error_of(train_csv(api, f"{site.url}/trickle"), 422)
    assert message == f"timed out after 3s fetching {site.url}/trickle"
    assert time.monotonic() - started < 5


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name that resolves to an allowed address when checked and to another when connecting
    # (DNS rebinding) must be fetched from the checked one: the name is resolved once.
    good = _server(b"from the checked address", "127.0.0.1")
    evil = _server(b"from the rebound address", "127.0.0.2", port=good.server_address[1])
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    calls = []

    def fake_getaddrinfo(host: str, port: int, *args: object, **kw: object) -> list:
        calls.append(host)
        if host != "rebind.test":
            return real(host, port, *args, **kw)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    policy = FetchPolicy(allow_private=False, allow_hosts=("127.0.0.1/32",))
    port = good.server_address[1]
    assert fetch_bytes(f"http://rebind.test:{port}/", policy) == b"from the checked address"
    assert calls.count("rebind.test") == 1
    with pytest.raises(
        FetchRefused,
        match=r"resolves to non-public address 127\.0\.0\.2, and FETCH_ALLOW_HOSTS does not list rebind\.test:\d+$",
    ):
        fetch_bytes(f"http://rebind.test:{port}/", policy)
    for server in (good, evil):
        server.shutdown()
        server.server_close()


def _server(body: bytes, host: str, port: int = 0) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

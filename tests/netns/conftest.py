"""Fixtures for the tests that must run with loopback only (see tests/test_loopback_namespace.py)."""

from __future__ import annotations

import contextlib
import http.server
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from api_fixtures import site, strict_api, trained_model
from api_testing import Api, Site, run_api
from stl_testing import loopback_only

__all__ = ["api", "site", "strict_api", "trained_model", "trap"]

#: What a client may name as model.uri on the `api` server (besides its own store).
ALLOWED_BUCKET = "s3://allowed-bucket/models"


@pytest.fixture(scope="session", autouse=True)
def _only_loopback() -> None:
    assert loopback_only(), "tests/netns must run in a loopback-only network namespace"


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Api]:
    """Trusts the file server's host:port and IMPORT_ROOT; short back-off and download deadline."""
    env = {
        "FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}",
        "IMPORT_ROOT": str(site.root),
        "MODEL_URI_ALLOW": f"{site.root / 'published'},gs://test,{ALLOWED_BUCKET}",
        "RETRY_BACKOFF": "1",
        "HTTP_TIMEOUT": "3",
    }
    with run_api(tmp_path_factory.mktemp("api"), env) as server:
        yield server


@dataclass
class Trap:
    """An HTTP server that records every request it gets: it must get none."""

    port: int
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def trap() -> Iterator[Trap]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Trap(server.server_address[1], seen)
    finally:
        with contextlib.suppress(Exception):
            server.shutdown()
        server.server_close()

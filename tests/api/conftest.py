"""Session fixtures: the file server, the service (two ways configured), a trained model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_testing import TOKEN, Api, Site, poll_until_done, run_api, serve_site, train_body


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The example data (and some broken files) on a real HTTP server on 127.0.0.1."""
    with serve_site(tmp_path_factory.mktemp("site")) as served:
        yield served


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Api]:
    """The service as deployed for trusted local data: only the file server's host:port is exempt."""
    tmp = tmp_path_factory.mktemp("api")
    env = {
        "FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}",
        "IMPORT_ROOT": str(site.root),
        "MODEL_URI_ALLOW": str(site.root),
        "RETRY_BACKOFF": "1",
    }
    with run_api(tmp, env) as server:
        yield server


@pytest.fixture(scope="session")
def strict_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The service with its defaults: no exempt hosts, no import root, and a bearer token."""
    tmp = tmp_path_factory.mktemp("strict")
    with run_api(tmp, {}, workers=1, token=TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def trained_model(api: Api, site: Site) -> str:
    """The example data set trained once for the session; its model_sha1."""
    final = poll_until_done(api, train_body(site))[-1].json()
    assert final["status"] == "ready", final
    return final["model_sha1"]

"""This directory's service (`api`: trusted local data); site, strict_api and trained_model are shared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_fixtures import site, strict_api, trained_model
from api_testing import Api, Site, run_api

__all__ = ["api", "site", "strict_api", "trained_model"]


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

"""Session fixtures shared by tests/api and tests/netns; each conftest adds its own ``api`` server.

A conftest imports these names, which makes pytest register them as fixtures there.
"""

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
def strict_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The service with its defaults: no exempt hosts, no import root, no model.uri targets, a token.

    Shared by modules that offer wrong tokens on purpose (schemathesis, the auth tests), so its
    lock-out is set out of their reach; the throttle's own test runs a server with the default."""
    env = {"SIGNIN_MAX_FAILURES": "100000"}
    with run_api(tmp_path_factory.mktemp("strict"), env, workers=1, token=TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def trained_model(api: Api, site: Site) -> str:
    """The example data set trained once for the session on the conftest's ``api``; its model_sha1."""
    final = poll_until_done(api, train_body(site))[-1].json()
    assert final["status"] == "ready", final
    return final["model_sha1"]

"""Shared fixtures."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from stl_testing import FAKE_AWS, FileServer, loopback_only, moto_s3_server, serve_directory

# tests/netns/ make the service fetch hostile URLs: they run only where no packet can leave
# the machine, started by tests/test_loopback_namespace.py inside a fresh network namespace.
collect_ignore = [] if loopback_only() else ["netns"]


@pytest.fixture(scope="session", autouse=True)
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One int8 base cache for the session (so conversion runs once), never the user's own.

    Set in the environment so that `stl` subprocesses and gunicorn workers share it.
    """
    from model.bases.registry import ensure_base
    from store import LocalStore

    shared = os.environ.get("STL_TESTS_BASE_CACHE")  # the outer session's, inside the namespace run
    cache = Path(shared) if shared else tmp_path_factory.mktemp("base-cache")
    saved = os.environ.get("STL_BASE_CACHE")
    os.environ["STL_BASE_CACHE"] = str(cache)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    for base in ("efficientnet-lite0", "efficientnet-lite2"):  # the smallest, and the default
        ensure_base(LocalStore(tmp_path_factory.mktemp("warm")), base, str(cache))
    yield cache
    if saved is None:
        os.environ.pop("STL_BASE_CACHE", None)
    else:
        os.environ["STL_BASE_CACHE"] = saved


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A real HTTP server on a free loopback port, serving a fresh directory."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as server:
        yield server


#: Buckets the S3 tests use, one per concern, all on one moto server.
S3_BUCKETS = ("stl-contract", "stl-test", "stl-e2e")


@pytest.fixture(scope="session")
def fake_aws() -> Iterator[None]:
    """moto's fake credentials in the environment (which `stl` subprocesses and spawned workers
    inherit), so that boto3 never looks further for real ones; never real ones, never AWS."""
    with pytest.MonkeyPatch.context() as mp:
        for var, value in FAKE_AWS.items():
            mp.setenv(var, value)
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="session")
def moto_endpoint(fake_aws: None) -> Iterator[str]:
    """One moto S3 server for the session, with fake credentials in the environment."""
    with moto_s3_server(*S3_BUCKETS) as url:
        yield url


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One js-ipfs node for the session (tests/ipfs_node.py)."""
    from ipfs_node import start_ipfs_node

    node = start_ipfs_node(tmp_path_factory.mktemp("js-ipfs"))
    yield node
    node.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skip is a failure: a missing tool or server must not pass for a green run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reasons = sorted(
            {str(r.longrepr[-1]) if isinstance(r.longrepr, tuple) else str(r.longrepr) for r in skipped}
        )
        print(
            f"\nCI: {len(skipped)} skipped, which CI counts as failed: " + "; ".join(reasons), file=sys.stderr
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

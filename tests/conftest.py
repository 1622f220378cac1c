"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from stl_testing import FileServer, loopback_only, serve_directory

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
    ensure_base(LocalStore(tmp_path_factory.mktemp("warm")), "efficientnet-lite0", str(cache))
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

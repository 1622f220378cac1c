"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stl_testing import FileServer, serve_directory


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A real HTTP server on a free loopback port, serving a fresh directory."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as server:
        yield server

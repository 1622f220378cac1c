"""What every job-starting caller holds, as two objects instead of six arguments.

``Context`` is what one caller works with (settings read once, a store, the fetch
policy): the CLI and the Python API open one, a web worker's ``Service`` is one.
``Job`` is what names one run of a training: its recipe, where its CSV came from,
and who holds its lease.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from model.config import Settings
from model.data.fetch import FetchPolicy
from model.identity.recipe import Recipe
from store import ObjectStore, open_store

#: A store, or what names one: a path or a store URI (None: the settings' STORE_URI, then DATA_DIR).
StoreLike = str | os.PathLike[str] | ObjectStore | None


@dataclass
class Context:
    """Settings read once, a store, and the fetch policy."""

    settings: Settings
    store: ObjectStore
    policy: FetchPolicy

    @staticmethod
    def open(store: StoreLike = None, settings: Settings | None = None) -> Context:
        """A caller on their own machine: the store named (or the settings' one), no SSRF restrictions."""
        settings = settings or Settings.from_env()
        if not isinstance(store, ObjectStore):
            store = open_store(os.fspath(store) if store else settings.store_uri or None, settings.data_dir)
        policy = FetchPolicy(timeout=settings.http_timeout, max_bytes=settings.max_download_bytes)
        return Context(settings, store, policy)


@dataclass(frozen=True)
class Job:
    """One run of a training: the recipe, the CSV's source (None: by hash only), the lease holder."""

    recipe: Recipe
    csv_source: str | None
    owner: str

"""Choose a backend from a ``STORE_URI``.

A bare path (or ``local://path``/``file://path``) is the local backend; remote
schemes are looked up in ``BACKENDS`` so that a new backend is one entry here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlparse

from .base import ObjectStore
from .errors import StoreError
from .local import LocalStore

#: scheme -> factory(uri, cache_dir) for remote backends, filled in by their modules.
BACKENDS: dict[str, Callable[[str, str], ObjectStore]] = {}


def open_store(uri: str | None = None, data_dir: str | None = None) -> ObjectStore:
    """Open the store named by ``uri`` (default: ``STORE_URI``, then ``DATA_DIR``)."""
    data_dir = data_dir or os.environ.get("DATA_DIR") or "./data"
    uri = uri or os.environ.get("STORE_URI") or data_dir
    parsed = urlparse(uri)
    if parsed.scheme in ("", "local", "file"):
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return LocalStore(path)
    factory = BACKENDS.get(parsed.scheme) or _LAZY.get(parsed.scheme)
    if factory is None:
        raise StoreError(f"unsupported store URI scheme {parsed.scheme!r} in {uri!r}")
    return factory(uri, data_dir)


# Remote backends import their client libraries only when asked for, so that the
# local default never pays for (or needs) boto3.
def _open_s3(uri: str, data_dir: str) -> ObjectStore:
    from .s3 import S3Store
    from .tiered import TieredStore

    return TieredStore(LocalStore(data_dir), S3Store.from_uri(uri))


def _open_ipfs(uri: str, data_dir: str) -> ObjectStore:
    from .ipfs import IpfsStore
    from .tiered import TieredStore

    cache = LocalStore(data_dir)
    # IPFS has no mutable names: its refs live in the same local directory as the cache.
    return TieredStore(cache, IpfsStore.from_uri(uri, refs=cache))


_LAZY: dict[str, Callable[[str, str], ObjectStore]] = {"s3": _open_s3, "gs": _open_s3, "ipfs": _open_ipfs}

"""The one table of store URI schemes: ``open_store``, model.uri and publishing all read it.

Each scheme names the function that opens it, as ``module:function``, imported
only when asked for, so that the local default never pays for (or needs) boto3.
A new backend is a transport module with an ``open_*`` function plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from urllib.parse import urlsplit

from .cas import ObjectStore
from .errors import StoreError

#: scheme -> "module:function" taking (uri, data_dir) and returning an ObjectStore.
SCHEMES: dict[str, str] = {
    "": "store.local:open_local",
    "local": "store.local:open_local",
    "file": "store.local:open_local",
    "s3": "store.s3:open_s3",
    "gs": "store.s3:open_s3",
    "ipfs": "store.ipfs:open_ipfs",
    "memory": "store.memory:open_memory",
}

#: Schemes whose stores are directories on this machine (their paths are resolved, not hosts).
LOCAL_SCHEMES = frozenset({"", "local", "file"})


def scheme_of(uri: str) -> str:
    """The scheme of a store URI, "" for a bare path."""
    return urlsplit(uri).scheme.lower()


def opener(scheme: str) -> Callable[[str, str], ObjectStore]:
    target = SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in SCHEMES if s)
        raise StoreError(f"unsupported store URI scheme {scheme!r}: use a path or one of {known}")
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def open_store(uri: str | None = None, data_dir: str = "./data", read_only: bool = False) -> ObjectStore:
    """Open the store named by ``uri`` (None or "": the local store at ``data_dir``).

    ``data_dir`` holds what a remote store keeps on this machine: its verified
    cache, and for IPFS its refs and CID index. Nothing here reads the environment:
    the caller's settings (``STORE_URI``, ``DATA_DIR``) say which store is meant.
    ``read_only``: a local store must exist and is neither created nor written (another
    party's store, read for what it holds); remote stores write nothing there on a read anyway.
    """
    uri = uri or data_dir
    scheme = scheme_of(uri)
    if read_only and scheme in LOCAL_SCHEMES:
        from .local import open_local

        return open_local(uri, data_dir, read_only=True)
    return opener(scheme)(uri, data_dir)


def local_root(uri: str | None, data_dir: str) -> str | None:
    """The folder the store ``open_store(uri, data_dir)`` opens lives in, if it is a local one."""
    uri = uri or data_dir
    if scheme_of(uri) not in LOCAL_SCHEMES:
        return None
    return uri.split("://", 1)[1] if "://" in uri else uri


__all__ = ["LOCAL_SCHEMES", "SCHEMES", "local_root", "open_store", "opener", "scheme_of"]

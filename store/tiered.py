"""A local cache in front of a remote store.

Reads try the cache first and fill it from the remote on a miss; every filled
object is verified on its way in, so the cache never holds bytes that do not hash
to their name. Writes go to the remote *first* and only then to the cache: if the
remote write fails the exception propagates and the object is not in the cache
either, so a local hit never suggests that an object is durable when no other
machine can see it. The price is that a write needs the remote to be up; a cache
that accepted writes while the remote is down would have to remember what to
upload later, and a crash in between would lose work silently.

Refs are shared state across machines (job status, leases), so they are never
cached: every ref call goes to the remote. For IPFS, the remote itself keeps refs
in a local directory (see store/ipfs.py), since IPFS has no mutable names.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from .base import ObjectStore
from .errors import HashMismatch
from .local import LocalStore


class TieredStore(ObjectStore):
    def __init__(self, cache: LocalStore, remote: ObjectStore) -> None:
        self.cache = cache
        self.remote = remote
        self.location = f"{remote.location} (cache {cache.root})"

    # -- objects -----------------------------------------------------------
    def put(self, data: bytes) -> str:
        sha1 = self.remote.put(data)
        self.cache.put(data)
        return sha1

    def put_file(self, path: str | os.PathLike[str]) -> str:
        sha1 = self.remote.put_file(path)
        self.cache.put_file(path)
        return sha1

    def put_stream(self, src: BinaryIO) -> str:
        # The stream can be read only once: stage it in the cache, upload from there,
        # and evict it again if the remote refuses (evicting a copy that was already
        # durable only costs a later cache miss).
        sha1 = self.cache.put_stream(src)
        try:
            self.remote.put_file(self.cache.object_path(sha1))
        except BaseException:
            self._evict(sha1)
            raise
        return sha1

    def _evict(self, sha1: str) -> None:
        self.cache.object_path(sha1).unlink(missing_ok=True)

    def _fill(self, sha1: str) -> None:
        """Copy an object from the remote into the cache, verified before it is visible."""
        self.remote.get_to_file(sha1, self.cache.object_path(sha1))

    def _cached(self, sha1: str) -> bool:
        return self.cache.has(sha1)

    def get(self, sha1: str) -> bytes:
        if not self._cached(sha1):
            self._fill(sha1)
        try:
            return self.cache.get(sha1)
        except HashMismatch:
            # The cache copy rotted on disk: drop it and fetch a fresh verified copy once.
            self._evict(sha1)
            self._fill(sha1)
            return self.cache.get(sha1)

    def open(self, sha1: str) -> BinaryIO:
        if not self._cached(sha1):
            self._fill(sha1)
        try:
            return self.cache.open(sha1)
        except HashMismatch:
            self._evict(sha1)
            self._fill(sha1)
            return self.cache.open(sha1)

    def get_to_file(self, sha1: str, dest: str | os.PathLike[str]) -> None:
        if not self._cached(sha1):
            self._fill(sha1)
        self.cache.get_to_file(sha1, dest)

    def has(self, sha1: str) -> bool:
        # A cache hit is trusted: writes only land in the cache after the remote took them.
        return self.cache.has(sha1) or self.remote.has(sha1)

    def native_id(self, sha1: str) -> str | None:
        return self.remote.native_id(sha1)

    def get_native(self, native_id: str) -> bytes:
        return self.remote.get_native(native_id)

    def link_native_id(self, sha1: str, native_id: str) -> None:
        self.remote.link_native_id(sha1, native_id)

    def size(self, sha1: str) -> int:
        if not self._cached(sha1):
            self._fill(sha1)
        return self.cache.size(sha1)

    # -- refs: always the remote's ---------------------------------------------
    def get_ref(self, name: str) -> bytes | None:
        return self.remote.get_ref(name)

    def set_ref(self, name: str, value: bytes) -> None:
        self.remote.set_ref(name, value)

    def create_ref(self, name: str, value: bytes) -> bool:
        return self.remote.create_ref(name, value)

    def replace_ref(self, name: str, expected: bytes, value: bytes) -> bool:
        return self.remote.replace_ref(name, expected, value)

    def delete_ref(self, name: str) -> None:
        self.remote.delete_ref(name)

    def list_refs(self, prefix: str) -> list[str]:
        return self.remote.list_refs(prefix)

    def close(self) -> None:
        self.remote.close()
        self.cache.close()


__all__ = ["TieredStore"]

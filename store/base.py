"""The interface every backend implements.

An ``ObjectStore`` holds two kinds of things:

* immutable *objects*, named by the SHA1 of their bytes: ``put`` returns the
  name, ``get`` verifies the bytes against it on every read;
* a small namespace of mutable *refs* for what is not content: which manifest a
  recipe produced, a job's status, a lease, the backend-native id of an object.

Refs support create-if-absent and compare-and-swap so that leases can be built
on any backend (a lock file locally, conditional writes on S3).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import HashMismatch, InvalidRefName, StoreError
from .hashing import CHUNK_SIZE, check_sha1, sha1_bytes

_REF_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")  # fullmatch: no trailing newline


def check_ref_name(name: str) -> str:
    """Refs are slash-separated names of safe segments; no '..', no empty parts."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or not all(_REF_SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        raise InvalidRefName(str(name))
    return name


def verify_bytes(sha1: str, data: bytes, where: str) -> bytes:
    actual = sha1_bytes(data)
    if actual != sha1:
        raise HashMismatch(sha1, actual, where)
    return data


class ObjectStore(ABC):
    """A content-addressed object store with a few mutable refs."""

    #: Human-readable location, used in error messages ("local:/data", "s3://b/p").
    location: str = "store"

    # -- objects -----------------------------------------------------------
    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha1. Idempotent and atomic."""

    @abstractmethod
    def get(self, sha1: str) -> bytes:
        """Return the bytes stored under ``sha1``; raise HashMismatch if they do not hash to it."""

    @abstractmethod
    def has(self, sha1: str) -> bool: ...

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file's content. Backends override this to stream large files."""
        return self.put(Path(path).read_bytes())

    def get_to_file(self, sha1: str, dest: str | os.PathLike[str]) -> None:
        """Write a verified copy of the object to ``dest`` atomically."""
        data = self.get(sha1)
        atomic_write(Path(dest), data)

    def open(self, sha1: str) -> BinaryIO:
        """A readable stream of an object whose hash was verified before it is returned.

        The default reads the object whole and hands back a spooled copy; backends
        that can stream (local, S3, tiered) override it to keep memory flat.
        """
        spool = tempfile.TemporaryFile()
        spool.write(self.get(sha1))
        spool.seek(0)
        return spool  # type: ignore[return-value]

    def iter_chunks(self, sha1: str) -> Iterator[bytes]:
        with self.open(sha1) as stream:
            yield from iter(lambda: stream.read(CHUNK_SIZE), b"")

    def native_id(self, sha1: str) -> str | None:
        """The backend's own name for an object (an IPFS CID), if it has one."""
        return None

    def get_native(self, native_id: str) -> bytes:
        """Bytes by the backend's own name, for backends whose names travel (IPFS CIDs).

        The caller learns the sha1 only from the bytes, so it must check them
        against something it trusts (see model.publish).
        """
        raise StoreError(f"{self.location} has no backend-native object names")

    def link_native_id(self, sha1: str, native_id: str) -> None:
        """Teach the store that ``sha1`` is known to it as ``native_id``; reads still verify the sha1."""
        raise StoreError(f"{self.location} has no backend-native object names")

    # -- refs --------------------------------------------------------------
    @abstractmethod
    def get_ref(self, name: str) -> bytes | None: ...

    @abstractmethod
    def set_ref(self, name: str, value: bytes) -> None: ...

    @abstractmethod
    def create_ref(self, name: str, value: bytes) -> bool:
        """Set ``name`` only if it does not exist; True if this call created it."""

    @abstractmethod
    def replace_ref(self, name: str, expected: bytes, value: bytes) -> bool:
        """Set ``name`` to ``value`` only if it currently holds ``expected``."""

    @abstractmethod
    def delete_ref(self, name: str) -> None: ...

    @abstractmethod
    def list_refs(self, prefix: str) -> list[str]:
        """Names of the refs under ``prefix/`` (recursively), sorted."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections; most backends hold none."""


def atomic_write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def spool_verified(src: BinaryIO, sha1: str, where: str) -> BinaryIO:
    """Copy a stream into an anonymous temp file while hashing; hand it out only if it matches."""
    spool = tempfile.TemporaryFile()
    try:
        digest = hashlib.sha1()
        for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
            digest.update(chunk)
            spool.write(chunk)
        if digest.hexdigest() != sha1:
            raise HashMismatch(sha1, digest.hexdigest(), where)
        spool.seek(0)
        return spool  # type: ignore[return-value]
    except BaseException:
        spool.close()
        raise


def copy_verified(src: BinaryIO, dest: Path, sha1: str, where: str) -> None:
    """Copy a stream to ``dest`` atomically, raising HashMismatch before it becomes visible."""
    check_sha1(sha1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        digest = hashlib.sha1()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha1:
            raise HashMismatch(sha1, digest.hexdigest(), where)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = ["ObjectStore", "atomic_write", "check_ref_name", "copy_verified", "spool_verified", "verify_bytes"]

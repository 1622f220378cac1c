"""Content addressing, written once over any transport.

An ``ObjectStore`` holds two kinds of things:

* immutable *objects*, named by the SHA1 of their bytes, kept under the sharded
  key ``objects/ab/cdef…``: ``put`` returns the name, and every read verifies the
  bytes against it before handing any of them out;
* a small namespace of mutable *refs* under ``refs/<name>``, for what is not
  content: which manifest a recipe produced, a job's status, a lease, a
  publication. Refs support create-if-absent and compare-and-swap, so leases
  (store/lease.py) work on every backend.

What differs between backends is only the transport (store/transport.py). Two
options compose stores without a class of their own:

* ``refs=``: refs on another transport, for backends without mutable names
  (IPFS keeps its objects on the node and its refs on local disk);
* ``cache=``: a local ObjectStore in front of a remote one. Writes go to the
  remote first and only then to the cache, so a cache hit never suggests that
  bytes are durable elsewhere when they are not; misses are filled verified,
  and a cached copy that rotted is replaced by a fresh verified one. Refs are
  shared state across machines and are never cached.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import HashMismatch, InvalidRefName, ObjectNotFound, detected, unwritable
from .files import stale_staged, write_atomically
from .hashing import CHUNK_SIZE, check_sha1, copy_hashing, sha1_bytes
from .transport import Entry, Transport

_REF_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")  # fullmatch: no trailing newline


def check_ref_name(name: str) -> str:
    """Refs are slash-separated names of safe segments; no '..', no empty parts."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or not all(_REF_SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        raise InvalidRefName(str(name))
    return name


def object_key(sha1: str) -> str:
    """Git-style sharding keeps directories and listings small."""
    check_sha1(sha1)
    return f"objects/{sha1[:2]}/{sha1[2:]}"


def ref_key(name: str) -> str:
    return "refs/" + check_ref_name(name)


def verified_stream(stream: BinaryIO, sha1: str, where: str) -> BinaryIO:
    """``stream`` positioned at its start, once its bytes are known to hash to ``sha1``.

    A seekable stream (a local file) is hashed in place and rewound; anything
    else is spooled to an anonymous temp file first, so no byte reaches the
    caller before the whole object was checked.
    """
    try:
        if _seekable(stream):
            actual, _ = copy_hashing(stream)
            stream.seek(0)
            result = stream
        else:
            result = tempfile.TemporaryFile()  # type: ignore[assignment]
            try:
                actual, _ = copy_hashing(stream, result)
                result.seek(0)
            finally:
                stream.close()
        if actual != sha1:
            result.close()
            raise detected(HashMismatch(sha1, actual, where))
        return result
    except BaseException:
        stream.close()
        raise


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError):
        return False


class ObjectStore:
    """A content-addressed object store with a few mutable refs, over a transport."""

    def __init__(
        self, transport: Transport, *, refs: Transport | None = None, cache: ObjectStore | None = None
    ):
        self.transport = transport
        self.refs = refs or transport
        self.cache = cache
        #: Human-readable location, used in error messages.
        self.location = transport.location

    # -- objects -----------------------------------------------------------
    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha1. Idempotent and atomic."""
        sha1 = sha1_bytes(data)
        self._publish(sha1, io.BytesIO(data), len(data))
        return sha1

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file's content without holding it in memory."""
        with open(path, "rb") as src:
            sha1, size = copy_hashing(src)
            self._publish(sha1, src, size)
        return sha1

    def _staging_dirs(self) -> list[str]:
        """The folders on this machine's disk the store stages writes in: its own, then its local
        cache's (a remote store); none for a memory store."""
        cache = self.cache.transport.staging_dir if self.cache else None
        return list(dict.fromkeys(d for d in (self.transport.staging_dir, cache) if d))

    def _local_disk(self) -> str | None:
        """The folder on this machine's disk that the store writes through: its staging folder,
        or its local cache's (a remote store); None where it has none (memory)."""
        return next(iter(self._staging_dirs()), None)

    def stale_staging(self, older_than: float) -> list[tuple[Path, int]]:
        """Staged copies on this machine's disk last written before ``older_than`` (epoch
        seconds): what a process killed mid-write left (``files.stale_staged``)."""
        return [found for d in self._staging_dirs() for found in stale_staged(d, older_than)]

    @staticmethod
    def remove_staged(found: list[tuple[Path, int]]) -> tuple[int, int]:
        """Remove staged copies ``stale_staging`` found; (files, bytes) removed."""
        files = size = 0
        for path, n in found:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                files, size = files + 1, size + n
        return files, size

    def remove_stale_staging(self, older_than: float) -> tuple[int, int]:
        """Remove what ``stale_staging`` finds; (files, bytes) removed."""
        return self.remove_staged(self.stale_staging(older_than))

    def free_bytes(self) -> int | None:
        """Free space on the store's local disk (``_local_disk``), or None where it has none."""
        disk = self._local_disk()
        return shutil.disk_usage(disk).free if disk else None

    def spool(self) -> BinaryIO:
        """A private temporary file for bytes whose name is not known yet, on the store's own
        disk (its staging folder, or its local cache's) rather than the system's temp folder:
        one filesystem to watch, and a full one is StoreUnwritable like any other write."""
        try:
            return tempfile.TemporaryFile(dir=self._local_disk())
        except OSError as e:
            raise unwritable(e) or e from None

    def put_stream(self, src: BinaryIO, expect: str | None = None) -> str:
        """Store a stream read once; its name is known only at the end, so it is spooled first.

        With ``expect``, bytes that do not hash to it raise HashMismatch and are not stored.
        """
        with self.spool() as spool:
            try:
                sha1, size = copy_hashing(src, spool)
            except OSError as e:
                raise unwritable(e) or e from None
            if expect is not None and sha1 != expect:  # the caller's input, not a stored object gone bad
                raise HashMismatch(expect, sha1, self.location)
            self._publish(sha1, spool, size)  # type: ignore[arg-type]
        return sha1

    def _publish(self, sha1: str, src: BinaryIO, size: int) -> None:
        """Make ``src`` (seekable, known to hash to ``sha1``) the object ``sha1``, remote first."""
        if self.transport.verify_before_put and self._intact(sha1):
            # Already there: only renew its age, so that garbage collection's grace period
            # protects it until the ref that will name it is written.
            self.transport.touch(object_key(sha1))
        else:
            # Absent, or present but corrupt: the right bytes repair it. Racing writers of one
            # object all write identical bytes, so an unconditional atomic put is safe.
            src.seek(0)
            self.transport.put(object_key(sha1), src, size)
        if self.cache is not None:
            self.cache._publish(sha1, src, size)

    def _intact(self, sha1: str) -> bool:
        entry = self.transport.get(object_key(sha1))
        if entry is None:
            return False
        with entry.stream as stream:
            return copy_hashing(stream)[0] == sha1

    def _where(self, sha1: str) -> str:
        native = self.transport.native_id(object_key(sha1))
        return f"{self.location} (cid {native})" if native else self.location

    def _open_here(self, sha1: str) -> BinaryIO:
        entry = self.transport.get(object_key(sha1))
        if entry is None:
            raise ObjectNotFound(sha1, self.location)
        try:
            return verified_stream(entry.stream, sha1, self.location)
        except HashMismatch as e:  # name the backend's own id only when it is needed
            raise HashMismatch(sha1, e.actual, self._where(sha1)) from None

    def open(self, sha1: str) -> BinaryIO:
        """A readable stream of the object, whose hash was verified before it is returned."""
        if self.cache is None:
            return self._open_here(sha1)
        try:
            return self.cache.open(sha1)
        except (ObjectNotFound, HashMismatch):
            pass  # a miss, or a cached copy that rotted: fill it afresh from the remote
        with self._open_here(sha1) as src:  # verified (and seekable) before a byte reaches the cache
            self.cache._publish(sha1, src, os.fstat(src.fileno()).st_size)
        return self.cache.open(sha1)

    def get(self, sha1: str) -> bytes:
        """The bytes stored under ``sha1``; HashMismatch if they do not hash to it."""
        if self.cache is not None:
            with self.open(sha1) as stream:
                return stream.read()
        entry = self.transport.get(object_key(sha1))
        if entry is None:
            raise ObjectNotFound(sha1, self.location)
        data = entry.read()  # read once and hash in memory: get() holds the object anyway
        actual = sha1_bytes(data)
        if actual != sha1:
            raise detected(HashMismatch(sha1, actual, self._where(sha1)))
        return data

    def get_to_file(self, sha1: str, dest: str | os.PathLike[str]) -> None:
        """Write a verified copy of the object to ``dest`` atomically."""
        with self.open(sha1) as src:
            write_atomically(src, dest)

    def iter_chunks(self, sha1: str) -> Iterator[bytes]:
        with self.open(sha1) as stream:
            yield from iter(lambda: stream.read(CHUNK_SIZE), b"")

    def has(self, sha1: str) -> bool:
        # A cache hit is trusted: objects land in the cache only after the remote took them.
        if self.cache is not None and self.cache.has(sha1):
            return True
        return self.transport.exists(object_key(sha1))

    def peek(self, sha1: str, size: int) -> bytes | None:
        """The first ``size`` bytes of an object, *unverified*, or None if it is absent.

        A hint only (gc asks whether an object looks like a JSON document before it reads and
        verifies it whole with ``get``): never data to act on by itself."""
        entry = self.transport.get(object_key(sha1))
        if entry is None:
            return None
        with entry.stream as stream:
            return stream.read(size)

    def list_objects(self) -> list[str]:
        """Every object's sha1, sorted (for garbage collection and audits)."""
        return [key[8:10] + key[11:] for key in self.transport.list("objects/")]

    def stat_object(self, sha1: str) -> tuple[float, int] | None:
        """(last written, size) of the object where the backend knows them (see Transport.stat)."""
        return self.transport.stat(object_key(sha1))

    def stat_ref(self, name: str) -> tuple[float, int] | None:
        return self.refs.stat(ref_key(name))

    def delete_object(self, sha1: str) -> None:
        """Remove an object (garbage collection only: content is otherwise never deleted)."""
        self.transport.delete(object_key(sha1))
        if self.cache is not None:
            self.cache.delete_object(sha1)

    def native_id(self, sha1: str) -> str | None:
        """The backend's own name for an object (an IPFS CID), if it has one."""
        return self.transport.native_id(object_key(sha1))

    def get_native(self, native_id: str) -> bytes:
        """Bytes by the backend's own name, for backends whose names travel (IPFS CIDs).

        The caller learns the sha1 only from the bytes, so it must check them
        against something it trusts (see model.publish).
        """
        return self.transport.get_native(native_id)

    def link_native_id(self, sha1: str, native_id: str) -> None:
        """Teach the store that ``sha1`` is known to it as ``native_id``; reads still verify the sha1."""
        self.transport.link_native_id(object_key(sha1), native_id)

    # -- refs --------------------------------------------------------------
    def _ref_entry(self, name: str) -> Entry | None:
        return self.refs.get(ref_key(name))

    def get_ref(self, name: str) -> bytes | None:
        entry = self._ref_entry(name)
        return None if entry is None else entry.read()

    def set_ref(self, name: str, value: bytes) -> None:
        self.refs.put(ref_key(name), io.BytesIO(value), len(value))

    def create_ref(self, name: str, value: bytes) -> bool:
        """Set ``name`` only if it does not exist; True if this call created it."""
        return self.refs.put(ref_key(name), io.BytesIO(value), len(value), if_absent=True)

    def replace_ref(self, name: str, expected: bytes, value: bytes) -> bool:
        """Set ``name`` to ``value`` only if it currently holds ``expected``."""
        entry = self._ref_entry(name)
        if entry is None:
            return False
        tag = entry.tag  # before reading: a lazy tag describes the value that was opened
        if entry.read() != expected:
            return False
        return self.refs.put(ref_key(name), io.BytesIO(value), len(value), if_tag=tag)

    def delete_ref(self, name: str) -> None:
        self.refs.delete(ref_key(name))

    def list_refs(self, prefix: str) -> list[str]:
        """Names of the refs under ``prefix/`` (recursively), sorted."""
        start = ref_key(prefix) + "/" if prefix else "refs/"
        return [key[len("refs/") :] for key in self.refs.list(start)]

    def close(self) -> None:
        """Release connections; most backends hold none."""
        self.transport.close()
        if self.refs is not self.transport:
            self.refs.close()
        if self.cache is not None:
            self.cache.close()


__all__ = ["ObjectStore", "check_ref_name", "object_key", "ref_key", "verified_stream"]

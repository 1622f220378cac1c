"""The local-disk transport: the embedded default.

Layout under the root (``DATA_DIR``)::

    objects/ab/cdef0123...   objects (the content layer's sharded keys)
    refs/<name>              one file per ref
    tmp/                     staging for atomic writes and ref locks (same filesystem)

Every write is staged in ``tmp/``, fsynced, then renamed (or, for
create-if-absent, hard-linked) into place, so a reader sees either nothing or
the whole value. A compare-and-swap (and a delete) takes an ``flock`` so that
its check and its rename are one step across processes; its tag is the value's
SHA1, computed only when asked. Plain puts take no lock: a rename is atomic on
its own, and the store never mixes plain puts and compare-and-swap on one key
(leases are only ever created and swapped; objects and statuses only put).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .cas import ObjectStore, object_key
from .errors import StoreError, StoreUnwritable, unwritable
from .files import staged_copy
from .transport import Entry, Transport, check_key, check_prefix


#: What the filesystem says when it will not take a write; anything else is a bug or a race.
def _writes(method):  # type: ignore[no-untyped-def]
    """Turn "cannot write here" into StoreUnwritable, which names the reason but not the path."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            mapped = unwritable(e)
            if mapped is not None:
                raise mapped from e
            raise

    return wrapper


def _content_tag(fd: int) -> str:
    """The SHA1 of an open file's bytes, read with pread so the stream's position is untouched."""
    digest = hashlib.sha1()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


class LocalTransport(Transport):
    verify_before_put = True

    def __init__(self, root: str | os.PathLike[str], read_only: bool = False) -> None:
        self.root = Path(root).absolute()
        self.location = f"local:{self.root}"
        self._tmp = self.root / "tmp"
        self.read_only = read_only
        if read_only:  # another party's store (BASE_STORE): nothing here may create or change it
            if not self.root.is_dir():
                raise StoreError(f"{self.root} is not a folder")
            self.staging_dir = None  # it stages nothing, and its tmp/ need not exist
        else:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self.staging_dir = str(self._tmp)

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise StoreUnwritable("the store was opened read-only")

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        # Serialises compare-and-swap and delete across processes. Keys share 256 striped lock
        # files, so that the lock files stay few however many keys there are.
        lock_path = self._tmp / ("lock-" + hashlib.sha1(key.encode()).hexdigest()[:2])
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get(self, key: str) -> Entry | None:
        try:
            stream = open(self.path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return Entry(stream, lambda: _content_tag(stream.fileno()))

    @_writes
    def put(
        self, key: str, src: BinaryIO, size: int, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        self._refuse_if_read_only()
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with staged_copy(src, self._tmp) as staged:
            if if_absent:
                return staged.link_to(dest)  # link() fails if the name exists: atomic create
            if if_tag is None:
                staged.rename_to(dest)
                return True
            with self._lock(key):
                if self._tag_now(dest) != if_tag:
                    return False
                staged.rename_to(dest)
        return True

    def _tag_now(self, path: Path) -> str | None:
        try:
            with open(path, "rb") as current:
                return _content_tag(current.fileno())
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / check_prefix(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirs, files in os.walk(base):
            if Path(dirpath) == self.root:
                dirs[:] = [d for d in dirs if d != "tmp"]  # staging is not content
            keys.extend(os.path.relpath(os.path.join(dirpath, f), self.root) for f in files)
        return sorted(keys)

    def stat(self, key: str) -> tuple[float, int] | None:
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_mtime, st.st_size

    def touch(self, key: str) -> None:
        self._refuse_if_read_only()
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(key))

    @_writes
    def delete(self, key: str) -> None:
        self._refuse_if_read_only()
        with self._lock(key), contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()


class LocalStore(ObjectStore):
    """An ObjectStore on a local directory: the embedded default, and every remote store's cache."""

    def __init__(self, root: str | os.PathLike[str], read_only: bool = False) -> None:
        transport = LocalTransport(root, read_only)
        super().__init__(transport)
        self.root = transport.root

    def object_path(self, sha1: str) -> Path:
        """Where an object's bytes live on disk (for tests and tools that look behind the store)."""
        return self.transport.path(object_key(sha1))  # type: ignore[attr-defined]


def open_local(uri: str, data_dir: str, read_only: bool = False) -> ObjectStore:
    """A bare path, ``local://path`` or ``file://path``."""
    return LocalStore(uri.split("://", 1)[1] if "://" in uri else uri, read_only)


__all__ = ["LocalStore", "LocalTransport", "open_local"]

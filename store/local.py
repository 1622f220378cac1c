"""The local-disk backend: the embedded default.

Layout under the root (``DATA_DIR``)::

    objects/ab/cdef0123...   git-style sharding keeps directories small
    refs/<name>              one file per ref
    tmp/                     staging for atomic writes (same filesystem)

Every write goes to ``tmp/``, is fsynced, then renamed into place, so a reader
sees either nothing or the whole object. Two processes writing the same object
race harmlessly: both renames install identical bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .base import ObjectStore, check_ref_name, copy_verified
from .errors import HashMismatch, ObjectNotFound, StoreUnwritable
from .hashing import CHUNK_SIZE, check_sha1, sha1_stream

#: What the filesystem says when it will not take a write; anything else is a bug or a race.
_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def _writes(method):  # type: ignore[no-untyped-def]
    """Turn "cannot write here" into StoreUnwritable, which names the reason but not the path."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            if e.errno in _UNWRITABLE:
                raise StoreUnwritable(f"the local store is not writable ({os.strerror(e.errno)})") from e
            raise

    return wrapper


class LocalStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.location = f"local:{self.root}"
        self._objects = self.root / "objects"
        self._refs = self.root / "refs"
        self._tmp = self.root / "tmp"
        for d in (self._objects, self._refs, self._tmp):
            d.mkdir(parents=True, exist_ok=True)

    # -- objects -----------------------------------------------------------
    def object_path(self, sha1: str) -> Path:
        check_sha1(sha1)
        return self._objects / sha1[:2] / sha1[2:]

    @_writes
    def put(self, data: bytes) -> str:
        sha1 = hashlib.sha1(data).hexdigest()
        path = self.object_path(sha1)
        if not self._intact(sha1):
            # Absent, or present but corrupt: the right bytes repair it.
            self._install(path, data)
        return sha1

    def _intact(self, sha1: str) -> bool:
        try:
            with self.open(sha1):  # open() verifies the bytes against the name
                return True
        except (ObjectNotFound, HashMismatch):
            return False

    def put_file(self, path: str | os.PathLike[str]) -> str:
        with open(path, "rb") as src:
            return self.put_stream(src)

    @_writes
    def put_stream(self, src: BinaryIO) -> str:
        """Store a stream without holding it in memory; the name is known only at the end."""
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="obj-")
        try:
            digest = hashlib.sha1()
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha1 = digest.hexdigest()
            dest = self.object_path(sha1)
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            return sha1
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _install(self, dest: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="obj-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, sha1: str) -> bytes:
        path = self.object_path(sha1)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(sha1, self.location) from None
        actual = hashlib.sha1(data).hexdigest()
        if actual != sha1:
            raise HashMismatch(sha1, actual, self.location)
        return data

    def has(self, sha1: str) -> bool:
        return self.object_path(sha1).is_file()

    def size(self, sha1: str) -> int:
        try:
            return self.object_path(sha1).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(sha1, self.location) from None

    def open(self, sha1: str) -> BinaryIO:
        # Objects are immutable (only ever replaced by identical bytes), so hashing
        # the file and then handing out the same open handle is race-free.
        path = self.object_path(sha1)
        try:
            stream = open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(sha1, self.location) from None
        actual = sha1_stream(stream)
        if actual != sha1:
            stream.close()
            raise HashMismatch(sha1, actual, self.location)
        stream.seek(0)
        return stream

    def get_to_file(self, sha1: str, dest: str | os.PathLike[str]) -> None:
        with self.open(sha1) as src:
            copy_verified(src, Path(dest), sha1, self.location)

    def iter_object_ids(self) -> Iterator[str]:
        for shard in sorted(self._objects.iterdir()):
            for f in sorted(shard.iterdir()):
                yield shard.name + f.name

    # -- refs --------------------------------------------------------------
    def _ref_path(self, name: str) -> Path:
        return self._refs / check_ref_name(name)

    @contextlib.contextmanager
    def _ref_lock(self, name: str) -> Iterator[None]:
        # One lock file per ref serialises compare-and-swap across processes.
        lock_path = self._tmp / ("lock-" + hashlib.sha1(name.encode()).hexdigest())
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get_ref(self, name: str) -> bytes | None:
        try:
            return self._ref_path(name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _write_ref_tmp(self, value: bytes) -> str:
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="ref-")
        with os.fdopen(fd, "wb") as out:
            out.write(value)
            out.flush()
            os.fsync(out.fileno())
        return tmp

    @_writes
    def set_ref(self, name: str, value: bytes) -> None:
        path = self._ref_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_ref_tmp(value)
        with self._ref_lock(name):
            os.replace(tmp, path)

    @_writes
    def create_ref(self, name: str, value: bytes) -> bool:
        path = self._ref_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_ref_tmp(value)
        try:
            with self._ref_lock(name):
                os.link(tmp, path)  # link() fails if the name exists: atomic create
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    @_writes
    def replace_ref(self, name: str, expected: bytes, value: bytes) -> bool:
        path = self._ref_path(name)
        tmp = self._write_ref_tmp(value)
        try:
            with self._ref_lock(name):
                if self.get_ref(name) != expected:
                    return False
                os.replace(tmp, path)
                tmp = ""
                return True
        finally:
            if tmp:
                os.unlink(tmp)

    @_writes
    def delete_ref(self, name: str) -> None:
        with self._ref_lock(name), contextlib.suppress(FileNotFoundError):
            self._ref_path(name).unlink()

    def list_refs(self, prefix: str) -> list[str]:
        base = self._ref_path(prefix) if prefix else self._refs
        if not base.is_dir():
            return []
        names = []
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                names.append(os.path.relpath(os.path.join(dirpath, f), self._refs))
        return sorted(names)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

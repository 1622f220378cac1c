"""The transport: what a backend must provide, and nothing more.

A transport moves bytes under string keys. It knows nothing of hashes, layout or
refs; ``store.cas.ObjectStore`` builds all of that once on top. Five methods make a
transport, small enough to write in an afternoon for a new backend:

* ``get(key)``: the bytes as a stream plus a version *tag*, or None if absent;
* ``put(key, src, size)``: replace the value atomically (readers see the old
  value or the new one, never a mix); ``if_absent=True`` creates only if the key
  is missing, ``if_tag=T`` replaces only if the current tag is still T; both
  return False when their condition fails;
* ``exists(key)``, ``list(prefix)`` (keys under a ``prefix`` ending in "/",
  sorted) and ``delete(key)`` (no error if absent).

Tags are opaque to the caller: an ETag on S3, a generation on GCS, a content
hash on disk, a counter in memory. A transport that can name bytes in its own
way (an IPFS CID) may also implement the three ``native`` methods.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, BinaryIO

from .errors import StoreError

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*(/[A-Za-z0-9][A-Za-z0-9._:-]*)*")


def check_key(key: str) -> str:
    """Keys are relative, slash-separated safe segments: no '..', no empty or absolute parts."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or ".." in key:
        raise StoreError(f"invalid transport key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A list prefix is "" (everything) or a key followed by "/"."""
    if prefix and not (prefix.endswith("/") and check_key(prefix[:-1])):
        raise StoreError(f"invalid transport prefix: {prefix!r}")
    return prefix


class Entry:
    """A value as a transport hands it out: a readable stream and its version tag.

    The tag may be computed lazily (the local transport hashes the file only if
    someone asks), so reading an object never pays for a tag nobody needs.
    """

    def __init__(self, stream: BinaryIO, tag: str | Callable[[], str]) -> None:
        self.stream = stream
        self._tag = tag

    @property
    def tag(self) -> str:
        if callable(self._tag):
            self._tag = self._tag()
        return self._tag

    def read(self) -> bytes:
        with self.stream:
            return self.stream.read()

    def close(self) -> None:
        self.stream.close()


class GuardedReader:
    """A read-only stream that turns a transport's own read errors into the store's.

    S3 and IPFS stream bodies fail mid-read with their client libraries'
    exceptions; wrapping them here keeps those types out of the content layer.
    """

    def __init__(
        self, raw: Any, errors: tuple[type[BaseException], ...], wrap: Callable[[BaseException], Exception]
    ):
        self._raw = raw
        self._errors = errors
        self._wrap = wrap

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size) if size is not None and size >= 0 else self._raw.read()
        except self._errors as exc:
            raise self._wrap(exc) from None

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> GuardedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport(ABC):
    """Bytes under keys, with atomic conditional writes. See the module docstring."""

    #: Where the bytes are, for messages ("local:/data", "s3://bucket/prefix at http://…").
    location: str = "transport"

    #: Whether the content layer should read an object back before putting it again. On disk,
    #: hashing a held object is cheaper than an fsynced rewrite; on a server a blind PUT of the
    #: right bytes costs no more than the GET that would check, and repairs just the same.
    verify_before_put: bool = False

    #: A folder on this machine's disk where the transport stages writes (a local store's
    #: ``tmp/``), or None: where bytes whose name is not known yet are spooled.
    staging_dir: str | None = None

    @abstractmethod
    def get(self, key: str) -> Entry | None: ...

    @abstractmethod
    def put(
        self, key: str, src: BinaryIO, size: int, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    # -- optional: what garbage collection needs to know of a key -------------------
    def stat(self, key: str) -> tuple[float, int] | None:
        """(last written, as a Unix time; size in bytes), or None when absent or not known.

        Garbage collection deletes only what it knows to be old: a backend that cannot
        tell keeps everything.
        """
        return None

    def touch(self, key: str) -> None:  # noqa: B027 - optional hook
        """Mark an existing key as just written (a put that found the bytes already there)."""

    # -- optional: backends whose own names for bytes travel (IPFS CIDs) ------------
    def native_id(self, key: str) -> str | None:
        return None

    def link_native_id(self, key: str, native_id: str) -> None:
        raise StoreError(f"{self.location} has no backend-native object names")

    def get_native(self, native_id: str) -> bytes:
        raise StoreError(f"{self.location} has no backend-native object names")

    def close(self) -> None:  # noqa: B027 - optional hook, most transports hold nothing
        """Release connections."""


__all__ = ["Entry", "GuardedReader", "Transport", "check_key", "check_prefix"]

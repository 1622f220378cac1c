"""Errors raised by the content-addressed store.

They are plain types so that the edges (HTTP handlers, the CLI) can turn each
into one clear message in one place; the store itself never formats output.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable


class StoreError(Exception):
    """Base class for every failure of the store."""

    #: The arguments a subclass with its own ``__init__`` was made with (kept by ``_made``).
    _made_with: tuple = ()

    def _made(self, *args: object) -> None:
        self._made_with = args

    def __reduce__(self) -> tuple:
        # Pickled (by Ray, between processes) from the arguments it was made with: the message
        # alone cannot rebuild a subclass whose __init__ takes other arguments.
        return (type(self), self._made_with) if self._made_with else super().__reduce__()


class ObjectNotFound(StoreError):
    def __init__(self, sha1: str, where: str = "store") -> None:
        super().__init__(f"object {sha1} not found in {where}")
        self._made(sha1, where)
        self.sha1 = sha1


class HashMismatch(StoreError):
    """Bytes read under a hash do not hash to it: corruption or tampering."""

    def __init__(self, expected: str, actual: str, where: str = "store") -> None:
        super().__init__(f"hash mismatch in {where}: expected sha1 {expected}, got {actual}")
        self._made(expected, actual, where)
        self.expected = expected
        self.actual = actual


#: Called with every HashMismatch the store detects (a service counts them for /metrics).
MISMATCH_LISTENERS: list[Callable[[HashMismatch], None]] = []


def detected(error: HashMismatch) -> HashMismatch:
    """Tell the listeners about a mismatch just found; returns it, for ``raise detected(...)``."""
    for listener in MISMATCH_LISTENERS:
        listener(error)
    return error


class InvalidHash(StoreError):
    def __init__(self, value: str) -> None:
        super().__init__(f"not a sha1 hex digest: {value!r}")
        self._made(value)
        self.value = value


class InvalidRefName(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"invalid ref name: {name!r}")
        self._made(name)
        self.name = name


class BackendUnavailable(StoreError):
    """The backend could not be reached; nothing was written."""


class StoreUnwritable(BackendUnavailable):
    """The backend refuses writes (read-only, full, no permission); the message names no location."""


class ObjectTooLarge(StoreError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"object larger than the limit of {limit} bytes")
        self._made(limit)
        self.limit = limit


_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def unwritable(e: OSError) -> StoreUnwritable | None:
    """The StoreUnwritable that an OSError of a local write means (disk full, read-only), if any."""
    if e.errno in _UNWRITABLE:
        return StoreUnwritable(f"the local store is not writable ({os.strerror(e.errno)})")
    return None

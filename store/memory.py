"""An in-memory transport: the whole backend contract in a page.

It makes the contract suite's unit tests fast and shows what a new backend
needs: this file plus one line in store/registry.py. ``memory://name`` opens a
store shared by every caller in the process under that name; nothing survives
the process.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from typing import BinaryIO

from .cas import ObjectStore
from .transport import Entry, Transport, check_key, check_prefix


class MemoryTransport(Transport):
    def __init__(self, name: str = "") -> None:
        self.location = f"memory://{name}"
        self._values: dict[str, tuple[bytes, str]] = {}
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1)

    def get(self, key: str) -> Entry | None:
        with self._lock:
            found = self._values.get(check_key(key))
        return None if found is None else Entry(io.BytesIO(found[0]), found[1])

    def put(
        self, key: str, src: BinaryIO, size: int, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        data = src.read()
        with self._lock:
            current = self._values.get(check_key(key))
            if if_absent and current is not None:
                return False
            if if_tag is not None and (current is None or current[1] != if_tag):
                return False
            self._values[key] = (data, str(next(self._versions)))
            self._written[key] = time.time()
        return True

    def stat(self, key: str) -> tuple[float, int] | None:
        with self._lock:
            found = self._values.get(check_key(key))
            return None if found is None else (self._written[key], len(found[0]))

    def touch(self, key: str) -> None:
        with self._lock:
            if key in self._values:
                self._written[key] = time.time()

    def exists(self, key: str) -> bool:
        with self._lock:
            return check_key(key) in self._values

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        with self._lock:
            return sorted(k for k in self._values if k.startswith(prefix))

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(check_key(key), None)
            self._written.pop(key, None)


_NAMED: dict[str, MemoryTransport] = {}
_NAMED_LOCK = threading.Lock()


def open_memory(uri: str, data_dir: str) -> ObjectStore:
    name = uri.split("://", 1)[1]
    with _NAMED_LOCK:
        transport = _NAMED.setdefault(name, MemoryTransport(name))
    return ObjectStore(transport)


__all__ = ["MemoryTransport", "open_memory"]

"""SHA1 helpers: the store's only notion of identity, and its one chunked-hash loop."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from .errors import InvalidHash

SHA1_RE = re.compile(r"[0-9a-f]{40}")  # used with fullmatch: "$" would accept a trailing newline
CHUNK_SIZE = 1 << 20


def sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def copy_hashing(src: BinaryIO, dst: BinaryIO | None = None) -> tuple[str, int]:
    """Read ``src`` to its end in chunks, writing each to ``dst`` if given; return (sha1, size).

    Every place that hashes a stream goes through here, so memory stays flat
    whatever the object's size.
    """
    digest = hashlib.sha1()
    size = 0
    for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
        digest.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    return digest.hexdigest(), size


def is_sha1(value: object) -> bool:
    return isinstance(value, str) and SHA1_RE.fullmatch(value) is not None


def check_sha1(value: str) -> str:
    """Return ``value`` if it is a lowercase 40-hex sha1, else raise InvalidHash.

    Validating before a hash is turned into a key keeps ``../`` and friends out.
    """
    if not is_sha1(value):
        raise InvalidHash(value)
    return value

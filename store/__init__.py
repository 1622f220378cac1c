"""A content-addressed object store with pluggable transports.

It knows nothing of machine learning: objects are bytes named by their SHA1.
``cas`` writes content addressing once; ``local``, ``s3``, ``ipfs`` and
``memory`` are transports under it; ``registry`` maps URI schemes to them.
"""

from .cas import ObjectStore
from .errors import (
    BackendUnavailable,
    HashMismatch,
    InvalidHash,
    InvalidRefName,
    ObjectNotFound,
    ObjectTooLarge,
    StoreError,
    StoreUnwritable,
)
from .hashing import is_sha1, sha1_bytes, sha256_bytes
from .local import LocalStore
from .registry import open_store

__all__ = [
    "BackendUnavailable",
    "HashMismatch",
    "InvalidHash",
    "InvalidRefName",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectTooLarge",
    "StoreError",
    "StoreUnwritable",
    "is_sha1",
    "open_store",
    "sha1_bytes",
    "sha256_bytes",
]

"""The backends the store contract suite runs against, as picklable specs.

A spec opens the same store in any process (the cross-process tests spawn
workers), and opens it "elsewhere": the same remote seen from another machine,
with its own empty local state.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from store import ObjectStore, open_store
from store.cas import object_key

BUCKET = "stl-contract"

#: Every backend of the contract suite; REMOTE ones can also be pointed at a dead endpoint.
ALL = ("memory", "local", "s3", "s3+cache", "ipfs")
REMOTE = ("s3", "s3+cache", "ipfs")


@dataclass(frozen=True)
class Backend:
    kind: str
    data_dir: str  # this machine's local state (cache, IPFS refs and CID index)
    endpoint: str = ""  # S3 endpoint URL or IPFS API URL
    prefix: str = ""  # S3 key prefix or memory store name

    @property
    def shared_across_processes(self) -> bool:
        return self.kind != "memory"

    def open(self) -> ObjectStore:
        if self.kind == "memory":
            return open_store(f"memory://{self.prefix}")
        if self.kind == "local":
            return open_store(self.data_dir)
        if self.kind == "s3":
            from store.s3 import S3Transport

            return ObjectStore(S3Transport(BUCKET, self.prefix, endpoint_url=self.endpoint, max_attempts=1))
        if self.kind == "s3+cache":
            from store.local import LocalStore
            from store.s3 import S3Transport

            remote = S3Transport(BUCKET, self.prefix, endpoint_url=self.endpoint, max_attempts=1)
            return ObjectStore(remote, cache=LocalStore(self.data_dir))
        if self.kind == "ipfs":
            from store.ipfs import IpfsTransport
            from store.local import LocalTransport

            node = IpfsTransport(self.endpoint, index=LocalTransport(Path(self.data_dir) / "ipfs-index"))
            return ObjectStore(node, refs=LocalTransport(self.data_dir))
        raise AssertionError(self.kind)

    def elsewhere(self, data_dir: Path) -> Backend:
        """The same store from another machine: a fresh cache, where there is one.

        Local disk, memory and IPFS's per-machine CID index are this machine's, so
        for them "elsewhere" is the same store.
        """
        return replace(self, data_dir=str(data_dir)) if self.kind in ("s3", "s3+cache") else self

    def down(self, port: int) -> Backend:
        """The same store with its server gone (nothing listens on ``port``)."""
        assert self.kind in REMOTE
        return replace(self, endpoint=f"http://127.0.0.1:{port}")


def make_backend(kind: str, tmp: Path, s3_endpoint: str = "", ipfs_url: str = "") -> Backend:
    unique = uuid.uuid4().hex[:12]
    endpoint = ipfs_url if kind == "ipfs" else s3_endpoint if kind.startswith("s3") else ""
    return Backend(kind, str(tmp / "data"), endpoint, f"contract/{unique}" if kind != "memory" else unique)


def tamper(store: ObjectStore, sha1: str, data: bytes) -> None:
    """Put other bytes under an object's key, behind the content layer's back (the remote, if cached)."""
    store.transport.put(object_key(sha1), io.BytesIO(data), len(data))

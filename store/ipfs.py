"""The IPFS backend: objects in a Kubo node, spoken to over its RPC API.

``STORE_URI=ipfs://`` with the node's API address in ``IPFS_ADDRESS`` (a multiaddr
such as ``/dns/ipfs/tcp/5001/http`` or ``/ip4/127.0.0.1/tcp/5001``, or an http URL;
``ipfs://host:port`` also works). Only plain HTTP POSTs to ``/api/v0/*`` are used,
with ``requests``: the ipfshttpclient package refuses Kubo >= 0.9.

Objects are added with every CID-affecting parameter sent explicitly
(CIDv1, raw leaves, sha2-256, 256 KiB chunks), so the same bytes get the same CID
from any node whatever its ``Import.*`` defaults, and are pinned so the node's GC
keeps them. The node answers with the CID, which is recorded next to the sha1 as
the ref ``ipfs/cid/<sha1>``; ``native_id(sha1)`` returns it. Reads look the CID
up, ``cat`` it and verify the sha1 before any byte is returned, so a node that
serves other bytes (a corrupted blockstore, a wrong mapping) raises HashMismatch.

IPFS has no mutable names usable as compare-and-swap refs (IPNS is slow and
single-writer), so refs, including the sha1 -> CID map, live in a local directory
(``DATA_DIR``, through a LocalStore): objects are shareable with any node by CID,
but refs are per-machine metadata. Two machines sharing one Kubo node therefore
do not share leases; use S3 for shared job state.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import requests
import urllib3

from .base import ObjectStore, copy_verified, spool_verified, verify_bytes
from .errors import BackendUnavailable, ObjectNotFound, StoreError
from .hashing import CHUNK_SIZE, check_sha1
from .local import LocalStore

DEFAULT_ADDRESS = "/ip4/127.0.0.1/tcp/5001"

#: Everything that changes the CID of added bytes, pinned down rather than left to node config.
ADD_PARAMS: dict[str, str] = {
    "cid-version": "1",
    "raw-leaves": "true",
    "hash": "sha2-256",
    "chunker": "size-262144",
    "pin": "true",
    "progress": "false",
}

CID_REF_PREFIX = "ipfs/cid"


def api_url(address: str) -> str:
    """An http base URL from a multiaddr (``/ip4/1.2.3.4/tcp/5001[/http]``) or a URL."""
    address = address.strip()
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    parts = [p for p in address.split("/") if p]
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or parts[2] != "tcp":
        raise StoreError(f"cannot read IPFS API address {address!r}: expected e.g. /ip4/127.0.0.1/tcp/5001")
    host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
    scheme = "https" if "https" in parts[4:] or "tls" in parts[4:] else "http"
    return f"{scheme}://{host}:{parts[3]}"


class IpfsStore(ObjectStore):
    def __init__(
        self,
        address: str,
        refs: LocalStore,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ) -> None:
        self.url = api_url(address)
        self.refs = refs
        self.location = f"ipfs node {self.url}"
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()

    @classmethod
    def from_uri(cls, uri: str, *, refs: LocalStore, **kwargs: Any) -> IpfsStore:
        """``ipfs://`` (address from ``IPFS_ADDRESS``) or ``ipfs://host:port``."""
        netloc = urlparse(uri).netloc
        address = f"http://{netloc}" if netloc else os.environ.get("IPFS_ADDRESS") or DEFAULT_ADDRESS
        return cls(address, refs, **kwargs)

    # -- RPC plumbing ---------------------------------------------------------
    def _call(self, command: str, params: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """POST to ``/api/v0/<command>``; Kubo's RPC API accepts nothing but POST."""
        url = f"{self.url}/api/v0/{command}"
        try:
            resp = self._session.post(url, params=params, timeout=self._timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise BackendUnavailable(
                f"IPFS node at {self.url} unreachable ({_reason(exc)}); "
                "is the Kubo daemon running and IPFS_ADDRESS right?"
            ) from None
        except requests.Timeout:
            raise BackendUnavailable(f"IPFS node at {self.url} timed out on {command}") from None
        if resp.status_code != 200:
            message = _error_message(resp)
            resp.close()
            raise _RpcError(f"IPFS {command} failed on {self.url}: HTTP {resp.status_code}: {message}")
        return resp

    def version(self) -> str:
        """The node's Kubo version; also a cheap liveness check."""
        with self._call("version") as resp:
            return str(resp.json().get("Version", ""))

    # -- objects -----------------------------------------------------------
    def _cid_ref(self, sha1: str) -> str:
        return f"{CID_REF_PREFIX}/{check_sha1(sha1)}"

    def native_id(self, sha1: str) -> str | None:
        raw = self.refs.get_ref(self._cid_ref(sha1))
        return raw.decode() if raw is not None else None

    def get_native(self, native_id: str) -> bytes:
        try:
            with self._call("cat", {"arg": native_id}, stream=True) as resp:
                resp.raw.decode_content = True
                return self._read_all(resp)
        except _RpcError as exc:
            raise ObjectNotFound(native_id, f"{self.location} ({exc})") from None

    def link_native_id(self, sha1: str, native_id: str) -> None:
        self.refs.set_ref(self._cid_ref(sha1), native_id.encode())

    def _add(self, src: BinaryIO, size: int) -> str:
        """Add ``size`` bytes from ``src``; return their sha1 after recording the node's CID."""
        digest = hashlib.sha1()
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="object"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        body = _MultipartBody(head, src, tail, len(head) + size + len(tail), digest)
        # A body with a known length goes out un-chunked, which every HTTP server accepts.
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        with self._call("add", ADD_PARAMS, data=body, headers=headers) as resp:
            lines = [line for line in resp.iter_lines() if line.strip()]
        cid = ""
        for line in lines:  # one JSON object per added file (and per progress report)
            entry = json.loads(line)
            cid = entry.get("Hash", cid)
        if not cid:
            raise StoreError(f"IPFS add on {self.url} returned no CID")
        sha1 = digest.hexdigest()
        self.refs.set_ref(self._cid_ref(sha1), cid.encode())
        return sha1

    def put(self, data: bytes) -> str:
        return self._add(io.BytesIO(data), len(data))

    def put_file(self, path: str | os.PathLike[str]) -> str:
        with open(path, "rb") as src:
            return self._add(src, os.fstat(src.fileno()).st_size)

    def put_stream(self, src: BinaryIO) -> str:
        # The multipart body needs a length up front: spool once to learn it.
        with tempfile.TemporaryFile() as spool:
            for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
                spool.write(chunk)
            size = spool.tell()
            spool.seek(0)
            return self._add(spool, size)

    def _cat(self, sha1: str) -> requests.Response:
        cid = self.native_id(sha1)
        if cid is None:
            raise ObjectNotFound(sha1, self.location)
        try:
            resp = self._call("cat", {"arg": cid}, stream=True)
        except _RpcError as exc:
            raise ObjectNotFound(sha1, f"{self.location} (cid {cid}: {exc})") from None
        resp.raw.decode_content = True
        return resp

    def get(self, sha1: str) -> bytes:
        with self._cat(sha1) as resp:
            data = self._read_all(resp)
        return verify_bytes(sha1, data, f"{self.location} (cid {self.native_id(sha1)})")

    def _read_all(self, resp: requests.Response) -> bytes:
        try:
            return resp.content
        except requests.RequestException as exc:
            raise BackendUnavailable(f"IPFS node at {self.url} broke off a read: {_reason(exc)}") from None

    def open(self, sha1: str) -> BinaryIO:
        with self._cat(sha1) as resp, self._reading():
            return spool_verified(resp.raw, sha1, f"{self.location} (cid {self.native_id(sha1)})")

    def get_to_file(self, sha1: str, dest: str | os.PathLike[str]) -> None:
        with self._cat(sha1) as resp, self._reading():
            copy_verified(resp.raw, Path(dest), sha1, f"{self.location} (cid {self.native_id(sha1)})")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise BackendUnavailable(f"IPFS node at {self.url} broke off a read: {_reason(exc)}") from None

    def has(self, sha1: str) -> bool:
        """Recorded here *and* still pinned on the node."""
        cid = self.native_id(sha1)
        if cid is None:
            return False
        try:
            with self._call("pin/ls", {"arg": cid, "type": "recursive"}):
                return True
        except _RpcError:
            return False

    def pin(self, sha1: str) -> str:
        """Pin an object whose CID is recorded (e.g. after the node's repo was reset); return the CID."""
        cid = self.native_id(sha1)
        if cid is None:
            raise ObjectNotFound(sha1, self.location)
        with self._call("pin/add", {"arg": cid}):
            return cid

    # -- refs: local, see the module docstring ------------------------------------
    def get_ref(self, name: str) -> bytes | None:
        return self.refs.get_ref(name)

    def set_ref(self, name: str, value: bytes) -> None:
        self.refs.set_ref(name, value)

    def create_ref(self, name: str, value: bytes) -> bool:
        return self.refs.create_ref(name, value)

    def replace_ref(self, name: str, expected: bytes, value: bytes) -> bool:
        return self.refs.replace_ref(name, expected, value)

    def delete_ref(self, name: str) -> None:
        self.refs.delete_ref(name)

    def list_refs(self, prefix: str) -> list[str]:
        return self.refs.list_refs(prefix)

    def close(self) -> None:
        self._session.close()


class _MultipartBody:
    """A file-like multipart body that hashes the payload as it is sent (one pass over the data)."""

    def __init__(self, head: bytes, src: BinaryIO, tail: bytes, length: int, digest: Any) -> None:
        self._parts: list[Any] = [io.BytesIO(head), src, io.BytesIO(tail)]
        self._src = src
        self._length = length
        self._digest = digest

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        while self._parts:
            chunk = self._parts[0].read(size)
            if chunk:
                if self._parts[0] is self._src:
                    self._digest.update(chunk)
                return chunk
            self._parts.pop(0)
        return b""


class _RpcError(StoreError):
    """The node answered, but with an error (unknown CID, not pinned, bad argument)."""


def _error_message(resp: requests.Response) -> str:
    # Kubo reports errors as {"Message": ..., "Code": ..., "Type": "error"}.
    try:
        return str(resp.json().get("Message", "")) or resp.reason
    except ValueError:
        return resp.text[:200].strip() or str(resp.reason)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Connection reset"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


__all__ = ["ADD_PARAMS", "IpfsStore", "api_url"]

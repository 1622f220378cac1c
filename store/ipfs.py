"""The IPFS transport: objects in an IPFS node, spoken to over its HTTP RPC API.

``STORE_URI=ipfs://`` with the node's API address in ``IPFS_ADDRESS`` (a multiaddr
such as ``/dns/ipfs/tcp/5001/http`` or ``/ip4/127.0.0.1/tcp/5001``, or an http URL;
``ipfs://host:port`` also works). Only plain HTTP POSTs to ``/api/v0/*`` are used,
with ``requests``; Kubo and js-ipfs both speak this API.

Values are added with every CID-affecting parameter sent explicitly (CIDv1,
raw leaves, sha2-256, 256 KiB chunks, base32), so the same bytes get the same
CID from any node whatever its defaults, and are pinned so the node's GC keeps
them. IPFS chooses the name (the CID), not us, so the transport keeps an index
from key to CID on another transport (local disk); ``native_id`` returns it.

IPFS has no mutable names usable for compare-and-swap (IPNS is slow and
single-writer), so this transport holds objects only: ``open_ipfs`` keeps refs
in the local directory. Objects are shareable with any node by CID, but refs are
per-machine metadata; two machines sharing one node do not share leases (use S3
for shared job state).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from typing import Any, BinaryIO
from urllib.parse import urlparse

import requests
import urllib3

from .cas import ObjectStore
from .errors import BackendUnavailable, ObjectNotFound, StoreError
from .hashing import CHUNK_SIZE
from .local import LocalStore, LocalTransport
from .transport import Entry, GuardedReader, Transport, check_key, check_prefix

DEFAULT_ADDRESS = "/ip4/127.0.0.1/tcp/5001"

#: Everything that changes the CID of added bytes, pinned down rather than left to node config.
ADD_PARAMS: dict[str, str] = {
    "cid-version": "1",
    "raw-leaves": "true",
    "hash": "sha2-256",
    "chunker": "size-262144",
    "cid-base": "base32",
    "pin": "true",
    "progress": "false",
}


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


class IpfsTransport(Transport):
    def __init__(
        self,
        address: str,
        index: Transport,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ) -> None:
        self.url = api_url(address)
        self.index = index
        self.location = f"ipfs node {self.url}"
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()

    # -- RPC plumbing ---------------------------------------------------------
    def _call(self, command: str, params: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """POST to ``/api/v0/<command>``; the RPC API accepts nothing but POST."""
        url = f"{self.url}/api/v0/{command}"
        try:
            resp = self._session.post(url, params=params, timeout=self._timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise BackendUnavailable(
                f"IPFS node at {self.url} unreachable ({_reason(exc)}); "
                "is the IPFS daemon running and IPFS_ADDRESS right?"
            ) from None
        except requests.Timeout:
            raise BackendUnavailable(f"IPFS node at {self.url} timed out on {command}") from None
        if resp.status_code != 200:
            message = _error_message(resp)
            resp.close()
            raise _RpcError(f"IPFS {command} failed on {self.url}: HTTP {resp.status_code}: {message}")
        return resp

    def version(self) -> str:
        """The node's version; also a cheap liveness check."""
        with self._call("version") as resp:
            return str(resp.json().get("Version", ""))

    def _cat(self, cid: str) -> BinaryIO:
        resp = self._call("cat", {"arg": cid}, stream=True)
        resp.raw.decode_content = True
        errors = (requests.RequestException, urllib3.exceptions.HTTPError)
        return GuardedReader(resp.raw, errors, self._broke_off)  # type: ignore[return-value]

    def _broke_off(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(f"IPFS node at {self.url} broke off a read: {_reason(exc)}")

    # -- the transport -------------------------------------------------------
    def native_id(self, key: str) -> str | None:
        entry = self.index.get(check_key(key))
        return None if entry is None else entry.read().decode()

    def link_native_id(self, key: str, native_id: str) -> None:
        value = native_id.encode()
        self.index.put(check_key(key), io.BytesIO(value), len(value))

    def get_native(self, native_id: str) -> bytes:
        try:
            with self._cat(native_id) as stream:
                return stream.read()
        except _RpcError as exc:
            raise ObjectNotFound(native_id, f"{self.location} ({exc})") from None

    def get(self, key: str) -> Entry | None:
        cid = self.native_id(key)
        if cid is None or not self._pinned(cid):
            # Recorded here but no longer pinned: the node may have collected it, and a cat
            # would then wait on the network for blocks nobody has promised to keep.
            return None
        try:
            return Entry(self._cat(cid), cid)
        except _RpcError:
            return None

    def put(
        self, key: str, src: BinaryIO, size: int, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        if if_tag is not None:
            raise StoreError(f"{self.location} holds immutable objects only: refs live beside it")
        if if_absent and self.exists(key):
            return False
        cid = self._add(src, size)
        self.link_native_id(key, cid)
        return True

    def _add(self, src: BinaryIO, size: int) -> str:
        """Add ``size`` bytes from ``src``, streamed as one multipart file; return the node's CID."""
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="object"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = _MultipartBody([io.BytesIO(head), src, io.BytesIO(tail)], len(head) + size + len(tail))
        # A body with a known length goes out un-chunked, which every HTTP server accepts.
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        with self._call("add", ADD_PARAMS, data=body, headers=headers) as resp:
            lines = [line for line in resp.iter_lines() if line.strip()]
        cid = ""
        for line in lines:  # one JSON object per added file (and per progress report)
            cid = json.loads(line).get("Hash", cid)
        if not cid:
            raise StoreError(f"IPFS add on {self.url} returned no CID")
        return cid

    def exists(self, key: str) -> bool:
        """Recorded here *and* still pinned on the node."""
        cid = self.native_id(key)
        return cid is not None and self._pinned(cid)

    def _pinned(self, cid: str) -> bool:
        try:
            with self._call("pin/ls", {"arg": cid, "type": "recursive"}):
                return True
        except _RpcError:
            return False

    def list(self, prefix: str) -> list[str]:
        return self.index.list(check_prefix(prefix))

    def delete(self, key: str) -> None:
        cid = self.native_id(key)
        if cid is not None:
            with contextlib.suppress(_RpcError):  # not pinned (any more): nothing to release
                self._call("pin/rm", {"arg": cid}).close()
            self.index.delete(key)

    def pin(self, key: str) -> str:
        """Pin a value whose CID is recorded (e.g. after the node's repo was reset); return the CID."""
        cid = self.native_id(key)
        if cid is None:
            raise ObjectNotFound(key, self.location)
        self._call("pin/add", {"arg": cid}).close()
        return cid

    def close(self) -> None:
        self._session.close()


class _MultipartBody:
    """A file-like body read part after part, so a large object is never held in memory."""

    def __init__(self, parts: list[BinaryIO], length: int) -> None:
        self._parts = parts
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        while self._parts:
            chunk = self._parts[0].read(size)
            if chunk:
                return chunk
            self._parts.pop(0)
        return b""


class _RpcError(StoreError):
    """The node answered, but with an error (unknown CID, not pinned, bad argument)."""


def _error_message(resp: requests.Response) -> str:
    # Errors come as {"Message": ..., "Code": ..., "Type": "error"}.
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


def open_ipfs(uri: str, data_dir: str) -> ObjectStore:
    """``ipfs://`` (address from ``IPFS_ADDRESS``) or ``ipfs://host:port``.

    Objects on the node, with the key -> CID index, the refs and a verified
    cache in ``data_dir``.
    """
    netloc = urlparse(uri).netloc
    address = f"http://{netloc}" if netloc else os.environ.get("IPFS_ADDRESS") or DEFAULT_ADDRESS
    local = LocalTransport(data_dir)
    node = IpfsTransport(address, index=LocalTransport(os.path.join(data_dir, "ipfs-index")))
    return ObjectStore(node, refs=local, cache=LocalStore(data_dir))


__all__ = ["ADD_PARAMS", "IpfsTransport", "api_url", "open_ipfs"]

"""Fetch CSVs and images from URLs, local paths, or the store.

A *source* is written in one of three ways: an ``http(s)://`` URL, a path (or
``file://`` URL), or ``sha1:<hex>`` naming an object already in the store.
Relative sources are resolved against the CSV's own location, so a CSV and its
images can be moved together.

The service fetches URLs that users send, so the ``FetchPolicy`` decides what
is allowed: by default nothing that resolves to loopback, private, link-local
(169.254.169.254, the cloud metadata address, included) or multicast
addresses, and no path outside an import root. Redirects are followed by hand
so that every hop is checked again.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests

from store import ObjectStore, StoreError
from store.hashing import is_sha1, sha1_bytes

from .errors import ChecksumMismatch, FetchError, FetchRefused

MAX_REDIRECTS = 5
_SESSION_HEADERS = {"User-Agent": "static-transfer-learning/0.1"}


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    #: Allow URLs resolving to non-public addresses (the CLI on your own machine: yes; the service: no).
    allow_private: bool = True
    #: Exceptions to the private-address rule: "host", "host:port" or CIDRs ("127.0.0.0/8").
    allow_hosts: tuple[str, ...] = ()
    #: Allow local paths at all, and if ``import_root`` is set only below it.
    allow_paths: bool = True
    import_root: str = ""


def resolve_source(source: str, base: str | None = None) -> str:
    """Resolve ``source`` relative to ``base`` (a URL or a path of the file that named it)."""
    source = source.strip()
    if not source:
        raise FetchError("empty URL or path")
    if source.startswith("sha1:") or _is_url(source) or source.startswith("file://"):
        return source
    if base is None:
        return source
    if _is_url(base):
        return urljoin(base, source)
    if base.startswith("file://"):
        base = urlparse(base).path
    return str(Path(base).parent / source) if not os.path.isabs(source) else source


def fetch_bytes(
    source: str,
    policy: FetchPolicy,
    store: ObjectStore | None = None,
    expected_sha1: str | None = None,
) -> bytes:
    """Fetch ``source`` under ``policy``; verify against ``expected_sha1`` when given."""
    if source.startswith("sha1:"):
        data = _from_store(source[5:], store)
    elif _is_url(source):
        data = _from_url(source, policy)
    elif "://" in source and not source.startswith("file://"):
        raise FetchRefused(f"only http(s) URLs, paths and sha1: references are allowed: {source}")
    else:
        data = _from_path(source, policy)
    if expected_sha1 is not None:
        actual = sha1_bytes(data)
        if actual != expected_sha1:
            raise ChecksumMismatch(f"sha1 mismatch for {source}: expected {expected_sha1}, got {actual}")
    return data


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _from_store(sha1: str, store: ObjectStore | None) -> bytes:
    if store is None or not is_sha1(sha1):
        raise FetchError(f"bad store reference sha1:{sha1}")
    try:
        return store.get(sha1)
    except StoreError as e:
        raise FetchError(f"cannot read sha1:{sha1}: {e}") from None


def _from_path(source: str, policy: FetchPolicy) -> bytes:
    path = Path(urlparse(source).path if source.startswith("file://") else source)
    if not policy.allow_paths:
        raise FetchRefused(f"local paths are not allowed: {source}")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:
        raise FetchError(f"cannot read {source}: {e}") from None
    if policy.import_root and not is_below(resolved, policy.import_root):
        raise FetchRefused(f"path outside the import root {Path(policy.import_root).resolve()}: {source}")
    try:
        size = resolved.stat().st_size
        if size > policy.max_bytes:
            raise FetchError(f"{source} is {size} bytes, over the limit of {policy.max_bytes}")
        return resolved.read_bytes()
    except FileNotFoundError:
        raise FetchError(f"no such file: {source}") from None
    except IsADirectoryError:
        raise FetchError(f"is a directory, not a file: {source}") from None
    except PermissionError:
        raise FetchError(f"permission denied: {source}") from None
    except OSError as e:  # name too long, not a directory, symlink loop...
        raise FetchError(f"cannot read {source}: {e.strerror or e}") from None


def is_below(path: Path, root: str) -> bool:
    """Whether the resolved ``path`` is ``root`` or inside it (symlinks and '..' resolved)."""
    resolved_root = Path(root).resolve()
    return path == resolved_root or resolved_root in path.parents


def check_url_allowed(url: str, policy: FetchPolicy) -> None:
    """Raise FetchRefused if ``url``'s host resolves to an address the policy forbids."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise FetchRefused(f"only http(s) URLs are allowed: {url}")
    host = parsed.hostname
    if not host:
        raise FetchRefused(f"URL has no host: {url}")
    if policy.allow_private:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise FetchError(f"cannot resolve host {host!r} in {url}: {e.strerror}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if _is_public(addr) or _host_allowed(host, port, addr, policy.allow_hosts):
            continue
        raise FetchRefused(f"refusing to fetch {url}: {host} resolves to non-public address {addr}")


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (
        addr.is_loopback
        or addr.is_private
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def _host_allowed(host: str, port: int, addr: ipaddress._BaseAddress, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        try:
            if addr in ipaddress.ip_network(entry, strict=False):
                return True
            continue
        except ValueError:
            pass
        name, _, want_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if name.lower() == host.lower() and (not want_port or want_port == str(port)):
            return True
    return False


def _from_url(url: str, policy: FetchPolicy) -> bytes:
    with requests.Session() as session:
        session.headers.update(_SESSION_HEADERS)
        for _hop in range(MAX_REDIRECTS + 1):
            check_url_allowed(url, policy)
            try:
                resp = session.get(url, timeout=policy.timeout, stream=True, allow_redirects=False)
            except requests.Timeout:
                raise FetchError(f"timed out after {policy.timeout:g}s fetching {url}") from None
            except requests.RequestException as e:
                raise FetchError(f"cannot reach {url}: {_reason(e)}") from None
            with resp:
                if resp.is_redirect:
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status_code >= 400:
                    raise FetchError(f"HTTP {resp.status_code} fetching {url}")
                return _read_limited(resp, url, policy)
    raise FetchError(f"too many redirects fetching {url}")


def _read_limited(resp: requests.Response, url: str, policy: FetchPolicy) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(f"{url} is {declared} bytes, over the limit of {policy.max_bytes}")
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in resp.iter_content(64 * 1024):
            total += len(chunk)
            if total > policy.max_bytes:
                raise FetchError(f"{url} is over the limit of {policy.max_bytes} bytes")
            chunks.append(chunk)
    except requests.RequestException as e:
        raise FetchError(f"connection failed while reading {url}: {_reason(e)}") from None
    return b"".join(chunks)


def _reason(e: Exception) -> str:
    # requests nests the useful part (e.g. "Connection refused") deep inside.
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker
    return text.splitlines()[0][:200]

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

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests.certs
import urllib3
from urllib3.response import HTTPResponse

from model.config import Settings
from model.data.urls import HttpTarget, embedded_ipv4, is_public, parse_http_url
from model.errors import ChecksumMismatch, FetchError, FetchRefused
from store import ObjectStore, StoreError
from store.hashing import is_sha1, sha1_bytes

MAX_REDIRECTS = 5
_REQUEST_HEADERS = {"User-Agent": "static-transfer-learning/0.1", "Accept-Encoding": "identity"}


@dataclass(frozen=True)
class FetchPolicy:
    # The settings' defaults (HTTP_TIMEOUT, MAX_DOWNLOAD_BYTES), written once, in model.config.
    timeout: float = Settings.http_timeout
    max_bytes: int = Settings.max_download_bytes
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
    if source.startswith("sha1:") or is_url(source) or source.startswith("file://"):
        return source
    if base is None:
        return source
    if is_url(base):
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
    elif is_url(source):
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


def is_url(s: str) -> bool:
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
        raise FetchRefused(
            f"local paths are not allowed: {source} (the server reads its own files only below IMPORT_ROOT, "
            "which is not set: upload the file, or give an http(s) URL)"
        )
    if "\0" in str(path):
        raise FetchRefused(f"path contains a NUL byte: {source!r}")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:
        raise FetchError(f"cannot read {source}: {e}") from None
    if policy.import_root and not is_below(resolved, policy.import_root):
        raise FetchRefused(
            f"path outside the import root {Path(policy.import_root).resolve()} (IMPORT_ROOT): {source}"
        )
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


def resolve_target(target: HttpTarget, policy: FetchPolicy) -> str:
    """The one IP address to connect to for ``target``, checked against ``policy``.

    Every address the name resolves to must be allowed (a name that maps to both
    a public and a private address is refused), and the connection then goes to
    the first of them: checked once, used once.
    """
    literal = target.ip_literal()
    if literal is not None:
        addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise FetchError(f"cannot resolve host {target.host!r} in {target.url}: {reason}") from None
        addrs = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
        if not addrs:
            raise FetchError(f"host {target.host!r} in {target.url} has no address")
    if not policy.allow_private:
        for addr in addrs:
            if is_public(addr) or _host_allowed(target.host, target.port, addr, policy.allow_hosts):
                continue
            inner = embedded_ipv4(addr)
            wraps = f" (wraps {inner})" if inner is not None else ""
            raise FetchRefused(
                f"refusing to fetch {target.url}: {target.host} resolves to non-public address {addr}{wraps}, "
                f"and FETCH_ALLOW_HOSTS does not list {_host_port(target.host, target.port)}"
            )
    return str(addrs[0])


def _host_port(host: str, port: int) -> str:
    """How FETCH_ALLOW_HOSTS would name this host (an IPv6 address: bare, as a network)."""
    return host if ":" in host else f"{host}:{port}"


def check_url_allowed(url: str, policy: FetchPolicy) -> None:
    """Raise FetchRefused if ``url`` is malformed or names an address the policy forbids."""
    resolve_target(parse_http_url(url), policy)


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
    """GET ``url`` under ``policy``: every hop parsed, checked and pinned; one deadline for all of it."""
    deadline = time.monotonic() + policy.timeout
    for _hop in range(MAX_REDIRECTS + 1):
        target = parse_http_url(url)
        address = resolve_target(target, policy)
        with _open(target, address, deadline, policy) as resp:
            location = resp.get_redirect_location()
            if location:
                url = urljoin(url, location)
                continue
            if resp.status >= 400:
                raise FetchError(f"HTTP {resp.status} fetching {url}")
            return _read_limited(resp, url, policy, deadline)
    raise FetchError(f"too many redirects fetching {url}")


def _remaining(deadline: float, url: str, policy: FetchPolicy) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"timed out after {policy.timeout:g}s fetching {url}")
    return left


@contextlib.contextmanager
def _open(target: HttpTarget, address: str, deadline: float, policy: FetchPolicy) -> Iterator[HTTPResponse]:
    """Send the request to ``address`` itself, naming ``target.host`` in Host and TLS (SNI, certificate)."""
    left = _remaining(deadline, target.url, policy)
    timeout = urllib3.Timeout(connect=left, read=left)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=requests.certs.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False)
    headers = {**_REQUEST_HEADERS, "Host": target.host_header}
    try:
        resp = pool.urlopen(
            "GET",
            target.target,
            headers=headers,
            redirect=False,
            preload_content=False,
            assert_same_host=False,
        )
    except urllib3.exceptions.NewConnectionError as e:
        # A subclass of urllib3's TimeoutError, but "connection refused" is not a timeout.
        raise FetchError(f"cannot reach {target.url}: {_reason(e)}") from None
    except urllib3.exceptions.TimeoutError:
        raise FetchError(f"timed out after {policy.timeout:g}s fetching {target.url}") from None
    except urllib3.exceptions.HTTPError as e:
        raise FetchError(f"cannot reach {target.url}: {_reason(e)}") from None
    try:
        yield resp
    finally:
        resp.release_conn()
        pool.close()


def _read_limited(resp: HTTPResponse, url: str, policy: FetchPolicy, deadline: float) -> bytes:
    declared = resp.headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(f"{url} is {declared} bytes, over the limit of {policy.max_bytes}")
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            # One socket read at a time, each bounded by what is left of the
            # deadline: a server trickling a byte a second cannot hold us longer.
            _set_read_timeout(resp, _remaining(deadline, url, policy))
            chunk = resp.read1(64 * 1024)
            if not chunk:
                break
            total += len(chunk)
            if total > policy.max_bytes:
                raise FetchError(f"{url} is over the limit of {policy.max_bytes} bytes")
            chunks.append(chunk)
    except urllib3.exceptions.TimeoutError:
        raise FetchError(f"timed out after {policy.timeout:g}s fetching {url}") from None
    except urllib3.exceptions.HTTPError as e:
        raise FetchError(f"connection failed while reading {url}: {_reason(e)}") from None
    return b"".join(chunks)


def _set_read_timeout(resp: HTTPResponse, seconds: float) -> None:
    sock = getattr(resp.connection, "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _reason(e: Exception) -> str:
    # urllib3 nests the useful part (e.g. "Connection refused") deep inside.
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker
    return text.splitlines()[0][:200]

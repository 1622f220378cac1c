"""What the service refuses, or adds to every response, for the sake of the browsers that reach it.

A browser is a client that other sites can drive: a page on evil.example can make
the operator's browser send requests here, frame our pages, or (by DNS rebinding)
read our answers under its own name. So, for every request and response:

* **Host** must be one of ``ALLOWED_HOSTS`` (default: loopback names and addresses,
  the bind address and this machine's name; ``*`` opts out): a rebinding page's
  requests carry the attacker's name and get 400.
* **State changes** (POST, PUT, PATCH, DELETE) whose ``Origin`` (or, without it,
  ``Referer``) is another site's (its host and port are not the ``Host`` the request
  names) are refused with 403, with a token or without; ``ALLOWED_ORIGINS`` lists
  extra origins. Clients that send neither (curl, the 2019
  clients, scripts) are not browsers driven by a page and keep working.
* **Headers**: a strict Content-Security-Policy (scripts and styles from this server
  only, no inline code, no framing), ``nosniff``, ``X-Frame-Options: DENY`` and
  ``Referrer-Policy: same-origin`` on every response; Swagger UI's page needs inline
  styles and ``data:`` images, and its policy allows exactly those.
* **Redirects** after sign-in go to a local path only.
* **Sign-in throttling**: failed sign-ins (the page or a wrong bearer token) are
  counted per client address in each worker process; past ``MAX_FAILURES`` within
  ``WINDOW_S`` that address is refused (429) until the window has passed.
* **Proxies**: ``X-Forwarded-Proto`` and ``X-Forwarded-For`` are believed only from a
  peer in ``FORWARDED_ALLOW_IPS`` (gunicorn reads the same variable); then a sign-in
  over HTTPS at the proxy gets a ``Secure`` cookie.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from flask import Request, Response

#: Names and addresses of this machine that no other site can make a browser use for us.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: Pages and API answers: nothing but this server's own scripts, styles and images; no framing.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Swagger UI sets style attributes and shows data: icons; still no inline or foreign script.
SWAGGER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def safe_redirect_target(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this server (one leading slash), else ``default``.

    Refused: schemes (``https:``, ``javascript:``), ``//host`` (scheme-relative), backslashes
    (browsers read ``/\\host`` as ``//host``) and control characters."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def _hostname(host: str) -> str:
    """The name in a Host header, lower case, without the port ("[::1]:80" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def default_allowed_hosts(bind_host: str) -> tuple[str, ...]:
    """Loopback, the bind address (unless a wildcard) and this machine's own name."""
    names = [*LOOPBACK_HOSTS, socket.gethostname().lower()]
    if bind_host and bind_host not in ("0.0.0.0", "::", "[::]"):
        names.append(_hostname(bind_host))
    return tuple(dict.fromkeys(names))


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or _hostname(host) in {_hostname(a) for a in allowed}


def origin_of(url: str) -> str:
    """scheme://host[:port] of ``url`` (lower case), "" when it has none."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def foreign_origin(request: Request, allowed: tuple[str, ...]) -> str | None:
    """The other site's origin a state-changing request comes from, or None if it is ours (its
    host and port are the Host asked for, whatever scheme a proxy in front spoke), an allowed
    one, or unknown (no Origin, no Referer: not a browser driven by a page)."""
    if request.method not in STATE_CHANGING:
        return None
    origin = request.headers.get("Origin")
    if origin is not None:
        claimed = origin.strip().lower()  # "null": a sandboxed frame or a file, never ours
    else:
        referer = request.headers.get("Referer")
        if referer is None:
            return None
        claimed = origin_of(referer) or "null"
    if urlsplit(claimed).netloc == request.host.lower():
        return None
    if claimed in {a.strip().rstrip("/").lower() for a in allowed}:
        return None
    return claimed


def add_security_headers(response: Response, path: str) -> Response:
    """The headers every response carries (see the module doc); objects download, never render."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", SWAGGER_CSP if path.startswith("/api/doc") else STRICT_CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if path.startswith("/objects/") and response.status_code == 200:
        # Uploaded bytes are anyone's: saved as a file, never shown as a page of ours.
        headers["Content-Disposition"] = f"attachment; filename={path.rsplit('/', 1)[-1]}"
    return response


def peer_trusted(remote_addr: str | None, trusted: tuple[str, ...]) -> bool:
    """Whether the connection comes from a proxy we believe (``FORWARDED_ALLOW_IPS``: IPs, networks,
    or ``*``)."""
    if "*" in trusted:
        return True
    if not remote_addr:
        return False
    try:
        peer = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    for entry in trusted:
        try:
            if peer in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(request: Request, trusted: tuple[str, ...]) -> str:
    """Who is asking: the peer, or behind a trusted proxy the last address it forwarded for."""
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and peer_trusted(peer, trusted):
        return forwarded.split(",")[-1].strip() or peer
    return peer


def via_https(request: Request, trusted: tuple[str, ...]) -> bool:
    """Whether the browser spoke HTTPS: to us, or to a trusted proxy that says so."""
    if request.is_secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https" and peer_trusted(request.remote_addr, trusted)


class SignInThrottle:
    """Failed sign-ins per client address, in this worker's memory (each worker counts its own).

    Past ``max_failures`` within ``window_s`` the address is refused until the window passes.
    At most ``max_addresses`` are remembered (the oldest forgotten first), so a flood of
    addresses cannot grow the worker's memory."""

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 60.0,
        max_addresses: int = 10_000,
        clock: object = time.monotonic,
    ) -> None:
        self.max_failures, self.window_s, self.max_addresses = max_failures, window_s, max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(address, []) if now - t < self.window_s]
        if times:
            self._failures[address] = times
        else:
            self._failures.pop(address, None)
        return times

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        with self._lock:
            now = self.clock()  # type: ignore[operator]
            times = self._recent(address, now)
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock()  # type: ignore[operator]
            self._recent(address, now)
            self._failures.setdefault(address, []).append(now)
            self._failures.move_to_end(address)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

"""Parse a client's http(s) URL once, strictly, and judge the addresses it names.

Pure functions, no I/O. The fetcher connects to exactly the address judged here,
so the check and the connection cannot disagree: a URL that two parsers read
differently (a backslash in the authority, whitespace, control characters,
userinfo) is refused rather than interpreted, and the host is resolved once and
the connection pinned to that address (no second lookup, no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from model.errors import FetchRefused, InvalidUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Characters RFC 3986 allows in a URI; anything else in the scheme and authority is refused.
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~]+")
#: Whitespace, controls and backslash: read differently by browsers, WHATWG parsers and urllib.
_AMBIGUOUS = re.compile(r"[\x00-\x20\x7f\\]")

#: Ranges that ``ipaddress.is_global`` calls global but no fetch should reach.
_ALSO_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",  # shared address space (carrier NAT); 100.100.100.200 is a cloud metadata address
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "64:ff9b:1::/48",  # local-use NAT64
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class HttpTarget:
    """An http(s) URL taken apart once; what the fetcher connects to and sends."""

    url: str
    scheme: str
    host: str  # lowercase name, or an IP literal without brackets
    port: int
    target: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def ip_literal(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_http_url(url: str) -> HttpTarget:
    """Split ``url`` into an HttpTarget, or raise FetchRefused naming what is wrong."""
    if _AMBIGUOUS.search(url):
        raise InvalidUrl(f"URL contains a backslash, whitespace or control character: {url!r}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise FetchRefused(f"only http(s) URLs are allowed: {url}")  # policy, not syntax
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if not _URI_CHARS.fullmatch(authority):
        raise InvalidUrl(f"URL host must be ASCII (use the punycode form): {url}")
    if "@" in authority:
        raise InvalidUrl(f"URLs with user information (user@host) are not allowed: {url}")
    host, port = _split_authority(authority, url)
    if port is None:
        port = 443 if scheme == "https" else 80
    tail = tail.split("#", 1)[0]
    # Non-ASCII in a path is sent percent-encoded as UTF-8, as browsers do.
    target = quote(tail, safe="/?&=%:@!$'()*+,;~-._[]") or "/"
    if not target.startswith("/"):
        target = "/" + target
    parsed = HttpTarget(url, scheme, host, port, target)
    _agree_with_urllib(parsed)
    return parsed


def _split_authority(authority: str, url: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise InvalidUrl(f"unclosed '[' in the URL's host: {url}")
        host, after = authority[1:close], authority[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidUrl(f"not an IPv6 address in brackets: {url}") from None
        if after and not after.startswith(":"):
            raise InvalidUrl(f"unexpected text after the IPv6 address: {url}")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_raw = authority.partition(":")
        port_text = port_text_raw if colon else None
        if not host or not _REG_NAME.fullmatch(host):
            raise InvalidUrl(f"URL has no valid host: {url}")
    if port_text is None or port_text == "":
        return host.lower(), None
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidUrl(f"URL port must be a number from 1 to 65535, got {port_text!r}: {url}")
    return host.lower(), int(port_text)


def _agree_with_urllib(parsed: HttpTarget) -> None:
    # A second reading by the standard library: any disagreement means the URL is ambiguous.
    try:
        other = urlsplit(parsed.url)
        other_port = other.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise InvalidUrl(f"URL is ambiguous: {parsed.url}") from None
    if (other.hostname or "") != parsed.host or other_port != parsed.port:
        raise InvalidUrl(f"URL is ambiguous (parsers disagree on its host): {parsed.url}")


def embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: mapped, 6to4, NAT64 or Teredo client."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.teredo is not None:
        return addr.teredo[1]
    return None


def is_public(addr: IPAddress) -> bool:
    """Whether a server may fetch from ``addr``: a global unicast address, judged by what it wraps."""
    inner = embedded_ipv4(addr)
    if inner is not None:
        return is_public(inner)
    return addr.is_global and not addr.is_multicast and not any(addr in net for net in _ALSO_BLOCKED)

"""Optional bearer-token auth: with API_TOKEN set, every endpoint but health and docs needs it.

Reads are protected as well as writes: ``GET /models`` lists every model, and
from there every stored object (training images included) is one request away.
"""

from __future__ import annotations

import hmac

from flask import Request

from .errors import TooManyAttempts, Unauthorized, WrongToken
from .web_guard import SignInThrottle

#: Paths open without a token: liveness and readiness probes, the documentation, the web
#: pages' scripts and styles, and the page that signs a browser in.
PUBLIC_PREFIXES = ("/healthz", "/livez", "/readyz", "/api/", "/ui/static/", "/ui/login")
#: The cookie a browser signed in at /ui/login carries the token in (HttpOnly, SameSite=Strict).
TOKEN_COOKIE = "stl_token"


def presents_token(request: Request) -> bool:
    """Whether the request offers a token where one is checked (a header, or a signed-in
    browser's cookie): a probe of ``/livez`` that sends one anyway guesses nothing."""
    offered = request.headers.get("Authorization") or request.cookies.get(TOKEN_COOKIE)
    return bool(offered) and not request.path.startswith(PUBLIC_PREFIXES)


def check_token(request: Request, token: str) -> None:
    """Raise Unauthorized unless ``token`` is empty or the request carries it (header or cookie)."""
    if not token or request.path.startswith(PUBLIC_PREFIXES):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header and request.cookies.get(TOKEN_COOKIE):
        scheme, given = "bearer", request.cookies[TOKEN_COOKIE]
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("missing bearer token: send Authorization: Bearer <API_TOKEN>")
    # Constant-time comparison: the token must not leak through response timing.
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise WrongToken("invalid bearer token")


def refuse_if_throttled(throttle: SignInThrottle, address: str) -> None:
    """TooManyAttempts while ``address`` is locked out for failed sign-ins (right token or not)."""
    wait = throttle.retry_after(address)
    if wait is not None:
        raise TooManyAttempts(f"too many failed sign-ins from {address}; try again in {wait} s", wait)

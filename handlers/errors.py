"""Every error type the service can meet, mapped to an HTTP status in one table.

The pipeline and the store raise plain types with one-line messages; this module
is the only place that decides what a client sees for each. Anything not in the
table is a bug: it is logged with its traceback and answered as a bare 500, so a
client never sees a traceback.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from model.errors import (
    BaseModelError,
    BaseUnavailable,
    DataError,
    FetchRefused,
    InvalidRequest,
    InvalidUrl,
    JobStateError,
    ModelNotFound,
    PipelineError,
)
from store.errors import (
    BackendUnavailable,
    HashMismatch,
    InvalidHash,
    InvalidRefName,
    ObjectNotFound,
    ObjectTooLarge,
    StoreError,
    StoreUnwritable,
    unwritable,
)

#: A body over MAX_CONTENT_LENGTH, whether Werkzeug or stl serve's worker (handlers.http_worker) finds it.
BODY_TOO_LARGE = "request body is larger than the limit (MAX_DOWNLOAD_BYTES)"

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of the errors found by the HTTP layer itself."""


class InvalidInput(ApiError):
    """The body is not JSON, or a field or path parameter does not match the OpenAPI schema."""


class UnsupportedContentType(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class WrongToken(Unauthorized):
    """A token was given and it is not the server's (counted against the client's address)."""


class UnknownHost(ApiError):
    """The Host header names a host this service does not answer to (ALLOWED_HOSTS)."""


class CrossSiteRefused(ApiError):
    """A state-changing request from another site's page (Origin/Referer)."""


class TooManyAttempts(ApiError):
    """This client address failed to sign in too often; it may try again in ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(ApiError):
    """This worker is doing as much of a costly kind of work as it allows at once (unpacking a
    zip): 503, and come back in ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UploadTooLarge(ApiError):
    pass


class NotReady(ApiError):
    """This worker cannot serve yet (its base network is loading): 503, with the reason."""


#: Looked up along the exception's MRO, so the most specific entry wins
#: (FetchRefused before DataError, ModelNotFound before PipelineError).
STATUS: dict[type[BaseException], int] = {
    InvalidInput: 400,
    InvalidRequest: 400,
    InvalidHash: 400,
    InvalidRefName: 400,
    InvalidUrl: 400,
    UnknownHost: 400,
    Unauthorized: 401,
    CrossSiteRefused: 403,
    FetchRefused: 403,
    ModelNotFound: 404,
    ObjectNotFound: 404,
    JobStateError: 409,
    UploadTooLarge: 413,
    ObjectTooLarge: 413,
    UnsupportedContentType: 415,
    TooManyAttempts: 429,
    # Well-formed, but the data it names is unusable: unreachable URL, sha1
    # mismatch, bad CSV, not an image, a base network that is not installed.
    DataError: 422,
    BaseUnavailable: 503,
    BaseModelError: 422,
    PipelineError: 422,
    # The store failed us, not the client. Messages stay (they name no secrets).
    HashMismatch: 500,
    BackendUnavailable: 503,
    NotReady: 503,
    Busy: 503,
    StoreError: 500,
}


def status_of(error: BaseException) -> int | None:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


def error_response(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="static-transfer-learning"'
    return response


def retry_after(status: int, error: TooManyAttempts | Busy) -> Response:
    """An answer that says when to come back (429: a throttled sign-in, 503: a busy worker)."""
    response = error_response(status, str(error))
    response.headers["Retry-After"] = str(error.retry_after)
    return response


def handle(error: Exception) -> Response:
    if isinstance(error, RequestEntityTooLarge):
        return error_response(413, BODY_TOO_LARGE)
    if isinstance(error, HTTPException):
        # Routing errors (404 unknown path, 405 wrong method) from Flask itself;
        # keep their headers (405's Allow lists the methods that would work).
        response = error_response(error.code or 500, f"{error.name}: {error.description}")
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response
    if isinstance(error, OSError) and (full := unwritable(error)) is not None:
        error = full  # a full or read-only disk met outside the store (an upload's spool): the same 503
    status = status_of(error)
    if status is None:
        log.exception("unhandled error")
        return error_response(500, f"internal error ({type(error).__name__}); see the server log")
    if isinstance(error, StoreUnwritable):
        # Names the failure, not the path: the operator must act, the client should retry later.
        log.error("%s: %s", type(error).__name__, error)
        return error_response(status, f"store unavailable: {error}")
    if isinstance(error, (NotReady, BaseUnavailable)):  # the remedy, for whoever deploys it
        return error_response(status, str(error))
    if isinstance(error, (TooManyAttempts, Busy)):
        return retry_after(status, error)
    if status >= 500:
        # The store's messages name its location; that is for the log, not the client.
        log.error("%s: %s", type(error).__name__, error)
        return error_response(status, f"store error ({type(error).__name__}); see the server log")
    if isinstance(error, ObjectNotFound):
        return error_response(status, f"object {error.sha1} not found")
    return error_response(status, str(error))


def register(app: Flask) -> None:
    app.register_error_handler(Exception, handle)

"""Errors of the ML pipeline, raised where the fault is found.

Each carries a one-line message that names what was wrong; the edges (HTTP,
CLI) map the type to a status code or exit code in one place.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: anything that fails a job with a message for the user."""

    #: True when the world caused it (network, HTTP status): the same request may succeed later.
    transient = False


class InvalidRequest(PipelineError):
    """A request (API body, CLI flags) is malformed or out of range."""


class ModelNotFound(PipelineError):
    def __init__(self, model_sha1: str) -> None:
        super().__init__(f"unknown model {model_sha1}")
        self.model_sha1 = model_sha1

    def __reduce__(self) -> tuple:
        # Pickled (by Ray) from its argument: the message alone would not rebuild it.
        return (type(self), (self.model_sha1,))


class ModelNotReady(ModelNotFound):
    """A model whose job exists but has no manifest: still training, failed or cancelled."""

    def __init__(self, model_sha1: str, status: str, reason: str = "") -> None:
        PipelineError.__init__(
            self,
            f"model {model_sha1} is not ready: its training is {status}" + (f": {reason}" if reason else ""),
        )
        self.model_sha1, self.status, self.reason = model_sha1, status, reason

    def __reduce__(self) -> tuple:
        return (type(self), (self.model_sha1, self.status, self.reason))


class DataError(PipelineError):
    """The training or inference data is unusable."""


class FetchError(DataError):
    """A URL or path could not be fetched (unreachable, HTTP error, too large)."""

    transient = True


class FetchRefused(FetchError):
    """A URL or path is not allowed by the fetch policy (SSRF guard, import root)."""

    transient = False


class InvalidUrl(FetchRefused):
    """A URL is malformed or ambiguous (bad port, backslash, userinfo): refused, never interpreted."""


class CsvError(DataError):
    """The CSV is malformed or cannot make a training set."""


class ChecksumMismatch(DataError):
    """Fetched bytes do not match the sha1 the request or CSV promised."""


class ImageError(DataError):
    """Bytes are not a decodable image, are truncated, or exceed the pixel limit."""


class BaseModelError(PipelineError):
    """A base network's weights are missing, unpinned or unreadable."""


class BaseUnavailable(BaseModelError):
    """No store, cache or BASE_STORE holds the base, and this machine cannot convert it (no
    TensorFlow): an installation fact, not a bad request, so the service answers 503."""


class JobCancelled(PipelineError):
    """Someone asked for the running job to stop (``POST /models/<sha1>/cancel``, ``stl cancel``)."""


class JobStateError(PipelineError):
    """The request is valid but the job's state forbids it (cancel a finished job, delete a running one)."""


class ExecutorUnavailable(PipelineError):
    """The executor a job was to run on (the Ray cluster at RAY_ADDRESS) could not take it."""

    transient = True


class StoreChanged(PipelineError):
    """Objects a job read were deleted (by gc) before it could commit, again and again."""

    transient = True


class HeadInputError(DataError):
    """Features or parameters that the head's exact products cannot take (not integers, over their
    bound, not finite): refused, so that no product is ever computed inexactly."""

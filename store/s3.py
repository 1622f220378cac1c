"""The S3 transport: AWS S3, MinIO, or Google Cloud Storage's S3-interoperable API.

``STORE_URI=s3://bucket/prefix`` (endpoint from ``S3_ENDPOINT_URL``, credentials
from the usual ``AWS_*`` variables) or ``gs://bucket/prefix`` (the same code
pointed at https://storage.googleapis.com with HMAC keys). Keys live under the
prefix, so the content layer's layout is ``<prefix>/objects/ab/cdef…`` and
``<prefix>/refs/<name>``; ``<prefix>/tmp/cas-probe-<uuid>`` is used once to test
conditional writes.

Integrity: a PUT is all-or-nothing on S3, and single PUTs carry Content-MD5 so
that a body truncated or altered in flight is rejected by the server; multipart
uploads (above 16 MiB) rely on botocore's per-part checksums where the server
supports them and are checked for size afterwards. The content layer verifies
every read against its sha1.

Conditional writes: create-if-absent is ``PUT If-None-Match: *`` and
compare-and-swap is ``PUT If-Match: <etag>``; GCS spells both as
``x-goog-if-generation-match`` (0, or the generation read). Not every
S3-compatible server honours them, so the first use probes with a throwaway key
and logs a warning if a second create-if-absent succeeds: leases are then
best-effort (a race between two workers can run a job twice). Multipart uploads
carry no condition: only objects are that large, and racing writers of an
object write identical bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urlparse

import boto3
import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from urllib3.exceptions import HTTPError

from .cas import ObjectStore
from .errors import BackendUnavailable, StoreError
from .local import LocalStore
from .transport import Entry, GuardedReader, Transport, check_key, check_prefix

log = logging.getLogger(__name__)

GCS_ENDPOINT = "https://storage.googleapis.com"

# Errors that mean "could not talk to the server", as opposed to "the server said no".
_UNREACHABLE = (
    bce.EndpointConnectionError,
    bce.ConnectTimeoutError,
    bce.ReadTimeoutError,
    bce.ConnectionClosedError,
    bce.ProxyConnectionError,
)
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}

#: Multipart above 16 MiB: fewer round trips than the 8 MiB default for model-sized objects.
MULTIPART_THRESHOLD = 16 << 20
_TRANSFER = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)


class S3Transport(Transport):
    """Keys in one bucket under one prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        gcs: bool = False,
        client: Any | None = None,
        probe: bool = True,
        connect_timeout: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.gcs = gcs
        self.endpoint = endpoint_url or (GCS_ENDPOINT if gcs else "AWS S3 default endpoint")
        scheme = "gs" if gcs else "s3"
        self.location = f"{scheme}://{bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        if client is None:
            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=60,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                # GCS rejects the x-amz-checksum-* headers newer botocore adds by default.
                request_checksum_calculation="when_required" if gcs else "when_supported",
                response_checksum_validation="when_required" if gcs else "when_supported",
                s3={"addressing_style": "path"} if endpoint_url else None,
            )
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region or ("auto" if gcs else None),
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )
        self.client = client
        self._gcs_precondition = threading.local()
        if gcs:
            # boto3 has no parameter for GCS preconditions: add the header just before signing.
            self.client.meta.events.register("before-sign.s3.PutObject", self._add_gcs_precondition)
        #: None until probed; then whether the server rejects a second create-if-absent.
        self.conditional_writes: bool | None = None
        if probe:
            # Probing at construction puts the warning in the start-up log; an endpoint
            # that is down now is reported by the first real call instead.
            with contextlib.suppress(BackendUnavailable):
                self.probe_conditional_writes()

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Transport:
        """``s3://bucket/prefix`` or ``gs://bucket/prefix``, configured from the environment."""
        parsed = urlparse(uri)
        if parsed.scheme not in ("s3", "gs") or not parsed.netloc:
            raise StoreError(f"not an s3:// or gs:// URI with a bucket: {uri!r}")
        env = os.environ
        if parsed.scheme == "gs":
            kwargs.setdefault("gcs", True)
            kwargs.setdefault("endpoint_url", env.get("GCS_ENDPOINT_URL") or GCS_ENDPOINT)
            kwargs.setdefault("access_key", env.get("GCS_HMAC_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY_ID"))
            kwargs.setdefault("secret_key", env.get("GCS_HMAC_SECRET") or env.get("AWS_SECRET_ACCESS_KEY"))
        else:
            kwargs.setdefault("endpoint_url", env.get("S3_ENDPOINT_URL") or None)
        return cls(parsed.netloc, parsed.path, **kwargs)

    # -- keys and errors ---------------------------------------------------
    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn botocore's exceptions into the store's, with one-line messages."""
        try:
            yield
        except _UNREACHABLE as exc:
            raise self._unreachable(action, exc) from None
        except bce.NoCredentialsError:
            raise BackendUnavailable(
                f"no credentials for {self.location}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ) from None
        except bce.ClientError as exc:
            code = _code(exc)
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint}") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise StoreError(
                    f"access denied to {self.location} while trying to {action} ({code})"
                ) from None
            raise

    def _unreachable(self, action: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"S3 endpoint {self.endpoint} unreachable while trying to {action} "
            f"({type(exc).__name__}); is the server running and S3_ENDPOINT_URL right?"
        )

    # -- the transport -----------------------------------------------------
    def get(self, key: str) -> Entry | None:
        with self._errors("read"):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._key(check_key(key)))
            except bce.ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise
        headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        tag = headers.get("x-goog-generation", "") if self.gcs else resp.get("ETag", "")
        body = GuardedReader(resp["Body"], (*_UNREACHABLE, HTTPError), lambda e: self._unreachable("read", e))
        return Entry(body, tag)  # type: ignore[arg-type]

    def put(
        self, key: str, src: BinaryIO, size: int, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        full = self._key(check_key(key))
        conditional = if_absent or if_tag is not None
        if conditional and not self._cas_ok():
            # Best effort on a server that ignores conditions: check, then write (racy).
            found = self.get(key)
            current = None if found is None else found.tag
            if found is not None:
                found.close()
            if (if_absent and found is not None) or (if_tag is not None and current != if_tag):
                return False
            if_absent, if_tag = False, None
        if size > MULTIPART_THRESHOLD:
            if if_tag is not None:
                raise StoreError(
                    f"{self.location}: no compare-and-swap on values over {MULTIPART_THRESHOLD} bytes"
                )
            if if_absent and self.exists(key):
                return False
            with self._errors("upload"):
                self.client.upload_fileobj(src, self.bucket, full, Config=_TRANSFER)
            if self._size(full) != size:
                raise StoreError(f"upload of {key} to {self.location} did not store {size} bytes")
            return True
        return self._put_small(full, src.read(), if_absent=if_absent, if_match=if_tag)

    def _put_small(
        self, full_key: str, value: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> bool:
        """One PUT with Content-MD5, optionally conditional; False if the server refused the condition."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full_key,
            "Body": value,
            "ContentMD5": base64.b64encode(hashlib.md5(value).digest()).decode(),
        }
        if self.gcs:
            self._gcs_precondition.value = "0" if if_absent else if_match
        elif if_absent:
            kwargs["IfNoneMatch"] = "*"
        elif if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            with self._errors("write"):
                self.client.put_object(**kwargs)
            return True
        except bce.ClientError as exc:
            if (if_absent or if_match is not None) and _code(exc) in _PRECONDITION_CODES:
                return False
            raise
        finally:
            self._gcs_precondition.value = None

    def _add_gcs_precondition(self, request: Any, **_: Any) -> None:
        value = getattr(self._gcs_precondition, "value", None)
        if value is not None:
            request.headers["x-goog-if-generation-match"] = value

    def _head(self, full_key: str) -> dict[str, Any] | None:
        with self._errors("look up"):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=full_key)
            except bce.ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise

    def _size(self, full_key: str) -> int | None:
        head = self._head(full_key)
        return None if head is None else int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self._size(self._key(check_key(key))) is not None

    def stat(self, key: str) -> tuple[float, int] | None:
        head = self._head(self._key(check_key(key)))
        return None if head is None else (head["LastModified"].timestamp(), int(head["ContentLength"]))

    def list(self, prefix: str) -> list[str]:
        base = self._key("") if self.prefix else ""
        start = base + check_prefix(prefix)
        keys: list[str] = []
        with self._errors("list"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                keys.extend(item["Key"][len(base) :] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._errors("delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(check_key(key)))

    # -- conditional-write probe --------------------------------------------
    def _cas_ok(self) -> bool:
        if self.conditional_writes is None:
            self.probe_conditional_writes()
        return bool(self.conditional_writes)

    def probe_conditional_writes(self) -> bool:
        """Check, with a throwaway key, that the server refuses a second create-if-absent
        and a stale compare-and-swap; warn once if it does not."""
        key = self._key(f"tmp/cas-probe-{uuid.uuid4().hex}")
        try:
            first = self._put_small(key, b"1", if_absent=True)
            second = self._put_small(key, b"2", if_absent=True)
            stale = "0" if self.gcs else '"00000000000000000000000000000000"'
            swapped = self._put_small(key, b"3", if_match=stale)
            honoured = first and not second and not swapped
        except bce.ClientError as exc:
            # e.g. 501 NotImplemented from servers that reject the header outright
            log.debug("conditional-write probe failed on %s: %s", self.location, exc)
            honoured = False
        finally:
            with contextlib.suppress(bce.ClientError, BackendUnavailable), self._errors("delete probe"):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        self.conditional_writes = honoured
        if not honoured:
            log.warning(
                "%s does not honour conditional writes (If-None-Match/If-Match): "
                "job leases are best-effort and two workers may run the same job",
                self.location,
            )
        return honoured


def _code(exc: bce.ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def open_s3(uri: str, data_dir: str) -> ObjectStore:
    """``s3://`` and ``gs://``: the bucket, with a verified local cache in ``data_dir``."""
    return ObjectStore(S3Transport.from_uri(uri), cache=LocalStore(data_dir))


__all__ = ["GCS_ENDPOINT", "MULTIPART_THRESHOLD", "S3Transport", "open_s3"]

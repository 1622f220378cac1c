"""The S3 backend: AWS S3, MinIO, or Google Cloud Storage's S3-interoperable API.

``STORE_URI=s3://bucket/prefix`` (endpoint from ``S3_ENDPOINT_URL``, credentials
from the usual ``AWS_*`` variables) or ``gs://bucket/prefix`` (the same code
pointed at https://storage.googleapis.com with HMAC keys). Layout::

    <prefix>/objects/ab/cdef0123...   objects, sharded like the local store
    <prefix>/refs/<name>              one key per ref
    <prefix>/tmp/cas-probe-<uuid>     throwaway key used once to test conditional writes

Integrity: a PUT is all-or-nothing on S3, and single PUTs carry Content-MD5 so
that a body truncated or altered in flight is rejected by the server; multipart
uploads rely on botocore's per-part checksums where the server supports them and
are checked for size afterwards. Every read is verified against the sha1 before
a byte is handed out, so a corrupted or tampered remote object raises HashMismatch.

Refs use conditional writes: create-if-absent is ``PUT If-None-Match: *`` and
compare-and-swap is ``GET`` (bytes + ETag) then ``PUT If-Match: <etag>``; GCS
spells both as ``x-goog-if-generation-match`` (0, or the generation read). Not
every S3-compatible server honours them, so the first use probes with a
throwaway key and logs a warning if a second create-if-absent succeeds: leases
are then best-effort (a race between two workers can run a job twice).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import boto3
import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from .base import ObjectStore, check_ref_name, copy_verified, spool_verified, verify_bytes
from .errors import BackendUnavailable, ObjectNotFound, StoreError
from .hashing import CHUNK_SIZE, check_sha1

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

# Multipart above 16 MiB: fewer round trips than the 8 MiB default for model-sized objects.
_TRANSFER = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20)


class S3Store(ObjectStore):
    """Objects and refs in one bucket under one prefix."""

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
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Store:
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
    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _object_key(self, sha1: str) -> str:
        check_sha1(sha1)
        return self._key("objects", sha1[:2], sha1[2:])

    def _ref_key(self, name: str) -> str:
        return self._key("refs", check_ref_name(name))

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn botocore's exceptions into the store's, with one-line messages."""
        try:
            yield
        except _UNREACHABLE as exc:
            raise BackendUnavailable(
                f"S3 endpoint {self.endpoint} unreachable while trying to {action} "
                f"({type(exc).__name__}); is the server running and S3_ENDPOINT_URL right?"
            ) from None
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

    # -- objects -----------------------------------------------------------
    def put(self, data: bytes) -> str:
        sha1 = hashlib.sha1(data).hexdigest()
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        with self._errors("store an object"):
            self.client.put_object(Bucket=self.bucket, Key=self._object_key(sha1), Body=data, ContentMD5=md5)
        return sha1

    def put_file(self, path: str | os.PathLike[str]) -> str:
        size = os.path.getsize(path)
        with open(path, "rb") as src:
            sha1 = _sha1_of(src)
            src.seek(0)
            self._upload(src, sha1, size)
        return sha1

    def put_stream(self, src: BinaryIO) -> str:
        """Store a stream without holding it in memory: spool it to learn its name, then upload."""
        with tempfile.TemporaryFile() as spool:
            digest = hashlib.sha1()
            for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
                digest.update(chunk)
                spool.write(chunk)
            size = spool.tell()
            spool.seek(0)
            sha1 = digest.hexdigest()
            self._upload(spool, sha1, size)
        return sha1

    def _upload(self, src: BinaryIO, sha1: str, size: int) -> None:
        key = self._object_key(sha1)
        if self._remote_size(key) == size:
            return  # already there; a wrong-sized leftover is overwritten below
        with self._errors("upload an object"):
            self.client.upload_fileobj(src, self.bucket, key, Config=_TRANSFER)
        if self._remote_size(key) != size:
            raise StoreError(f"upload of {sha1} to {self.location} did not store {size} bytes")

    def _remote_size(self, key: str) -> int | None:
        with self._errors("look up an object"):
            try:
                return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
            except bce.ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise

    def _get_body(self, sha1: str) -> Any:
        with self._errors("read an object"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._object_key(sha1))["Body"]
            except bce.ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    raise ObjectNotFound(sha1, self.location) from None
                raise

    def get(self, sha1: str) -> bytes:
        body = self._get_body(sha1)
        with self._errors("read an object"), contextlib.closing(body):
            data = body.read()
        return verify_bytes(sha1, data, self.location)

    def has(self, sha1: str) -> bool:
        return self._remote_size(self._object_key(sha1)) is not None

    def open(self, sha1: str) -> BinaryIO:
        # Spool to an anonymous temp file while hashing: nothing is readable until verified.
        body = self._get_body(sha1)
        with self._errors("read an object"), contextlib.closing(body):
            return spool_verified(body, sha1, self.location)

    def get_to_file(self, sha1: str, dest: str | os.PathLike[str]) -> None:
        body = self._get_body(sha1)
        with self._errors("read an object"), contextlib.closing(body):
            copy_verified(body, Path(dest), sha1, self.location)

    # -- refs --------------------------------------------------------------
    def _get_ref_with_tag(self, name: str) -> tuple[bytes, str] | None:
        """The ref's bytes and the tag a conditional PUT must match (ETag, or GCS generation)."""
        with self._errors("read a ref"):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._ref_key(name))
            except bce.ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise
            with contextlib.closing(resp["Body"]) as body:
                data = body.read()
        headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        tag = headers.get("x-goog-generation", "") if self.gcs else resp.get("ETag", "")
        return data, tag

    def get_ref(self, name: str) -> bytes | None:
        found = self._get_ref_with_tag(name)
        return None if found is None else found[0]

    def set_ref(self, name: str, value: bytes) -> None:
        self._put_ref(self._ref_key(name), value)

    def _put_ref(self, key: str, value: bytes, *, if_none_match: bool = False, if_match: str = "") -> bool:
        """PUT a small value, optionally conditional; False if the server refused the condition."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": value,
            "ContentMD5": base64.b64encode(hashlib.md5(value).digest()).decode(),
        }
        if self.gcs:
            self._gcs_precondition.value = "0" if if_none_match else (if_match or None)
        elif if_none_match:
            kwargs["IfNoneMatch"] = "*"
        elif if_match:
            kwargs["IfMatch"] = if_match
        try:
            with self._errors("write a ref"):
                self.client.put_object(**kwargs)
            return True
        except bce.ClientError as exc:
            if (if_none_match or if_match) and _code(exc) in _PRECONDITION_CODES:
                return False
            raise
        finally:
            self._gcs_precondition.value = None

    def _add_gcs_precondition(self, request: Any, **_: Any) -> None:
        value = getattr(self._gcs_precondition, "value", None)
        if value is not None:
            request.headers["x-goog-if-generation-match"] = value

    def create_ref(self, name: str, value: bytes) -> bool:
        key = self._ref_key(name)
        if not self._cas_ok():
            if self.get_ref(name) is not None:  # best effort: racy without server support
                return False
            return self._put_ref(key, value)
        return self._put_ref(key, value, if_none_match=True)

    def replace_ref(self, name: str, expected: bytes, value: bytes) -> bool:
        found = self._get_ref_with_tag(name)
        if found is None or found[0] != expected:
            return False
        if not self._cas_ok():
            return self._put_ref(self._ref_key(name), value)
        return self._put_ref(self._ref_key(name), value, if_match=found[1])

    def delete_ref(self, name: str) -> None:
        with self._errors("delete a ref"):
            self.client.delete_object(Bucket=self.bucket, Key=self._ref_key(name))

    def list_refs(self, prefix: str) -> list[str]:
        base = self._key("refs") + "/"
        start = base + (check_ref_name(prefix) + "/" if prefix else "")
        names: list[str] = []
        with self._errors("list refs"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                names.extend(item["Key"][len(base) :] for item in page.get("Contents", []))
        return sorted(names)

    # -- conditional-write probe --------------------------------------------
    def _cas_ok(self) -> bool:
        if self.conditional_writes is None:
            self.probe_conditional_writes()
        return bool(self.conditional_writes)

    def probe_conditional_writes(self) -> bool:
        """Check, with a throwaway key, that the server refuses a second create-if-absent
        and a stale compare-and-swap; warn once if it does not."""
        key = self._key("tmp", f"cas-probe-{uuid.uuid4().hex}")
        try:
            first = self._put_ref(key, b"1", if_none_match=True)
            second = self._put_ref(key, b"2", if_none_match=True)
            stale = "0" if self.gcs else '"00000000000000000000000000000000"'
            swapped = self._put_ref(key, b"3", if_match=stale)
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


def _sha1_of(src: BinaryIO) -> str:
    digest = hashlib.sha1()
    for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
        digest.update(chunk)
    return digest.hexdigest()


def open_s3(uri: str, **kwargs: Any) -> S3Store:
    return S3Store.from_uri(uri, **kwargs)


__all__ = ["GCS_ENDPOINT", "S3Store", "open_s3"]

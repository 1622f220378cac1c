"""What only the S3 transport does, against moto's S3 server on 127.0.0.1 (tests/conftest.py).

The behaviour every backend shares is in test_store_contract.py. GCS is the same
transport with ``gcs=True``; no GCS server runs offline, so what is tested of it
is that its precondition headers are sent with the right values (see the README).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from store import LocalStore, ObjectStore, open_store
from store.s3 import S3Transport

BUCKET = "stl-test"


@pytest.fixture
def raw(moto_endpoint: str) -> Any:
    """A plain boto3 client, to look at and tamper with the bucket behind the store's back."""
    return boto3.client("s3", endpoint_url=moto_endpoint)


@pytest.fixture
def transport(moto_endpoint: str) -> S3Transport:
    return S3Transport(BUCKET, f"t/{uuid.uuid4().hex[:8]}", endpoint_url=moto_endpoint)


def test_key_layout_and_multipart(transport: S3Transport, raw: Any, tmp_path: Path) -> None:
    store = ObjectStore(transport)
    sha1 = store.put(b"hello")
    key = f"{transport.prefix}/objects/{sha1[:2]}/{sha1[2:]}"
    assert raw.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hello"
    store.set_ref("models/m/status", b"ready")
    ref = raw.get_object(Bucket=BUCKET, Key=f"{transport.prefix}/refs/models/m/status")
    assert ref["Body"].read() == b"ready"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(17 * (1 << 20)))  # above the 16 MiB multipart threshold
    big_sha1 = store.put_file(big)
    head = raw.head_object(Bucket=BUCKET, Key=f"{transport.prefix}/objects/{big_sha1[:2]}/{big_sha1[2:]}")
    assert "-" in head["ETag"], "a large file goes up as a multipart upload"


def test_probe_finds_conditional_writes_and_leaves_nothing(transport: S3Transport) -> None:
    assert transport.conditional_writes is True
    assert transport.list("tmp/") == []


def _drop_conditions(request: Any, **_: Any) -> None:
    for header in ("If-None-Match", "If-Match"):
        del request.headers[header]  # HTTPHeaders is an email.message.Message: no KeyError


def test_server_without_conditional_writes_warns(
    moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that ignores If-None-Match is detected by the probe and logged loudly."""
    transport = S3Transport(BUCKET, "nocas", endpoint_url=moto_endpoint, probe=False)
    # Strip the condition headers before signing: the server then sees plain PUTs,
    # as an S3-compatible server that does not implement them would.
    transport.client.meta.events.register("before-sign.s3.PutObject", _drop_conditions)
    with caplog.at_level(logging.WARNING, logger="store.s3"):
        assert transport.probe_conditional_writes() is False
    assert "does not honour conditional writes" in caplog.text
    store = ObjectStore(transport)
    assert store.create_ref("l", b"1")  # best effort still refuses an existing ref it can see
    assert not store.create_ref("l", b"2")
    assert store.replace_ref("l", b"1", b"3") and not store.replace_ref("l", b"1", b"4")


def test_gcs_preconditions_are_sent(moto_endpoint: str) -> None:
    """gs:// spells conditions as x-goog-if-generation-match: 0 to create, the generation read to swap."""
    transport = S3Transport(BUCKET, "gcs", endpoint_url=moto_endpoint, gcs=True, probe=False)
    sent: list[bytes | None] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(request.headers.get("x-goog-if-generation-match"))
        assert "If-None-Match" not in request.headers and "If-Match" not in request.headers

    transport.client.meta.events.register("before-send.s3.PutObject", record)
    transport.conditional_writes = True  # moto ignores GCS headers; here only what is sent is checked
    store = ObjectStore(transport)
    store.create_ref("r", b"1")
    store.set_ref("r", b"2")
    assert sent == [b"0", None]


def test_open_store_puts_a_verified_cache_in_front(moto_endpoint: str, tmp_path: Path) -> None:
    os.environ["S3_ENDPOINT_URL"] = moto_endpoint
    try:
        writer = open_store(f"s3://{BUCKET}/tiered", data_dir=str(tmp_path / "a"))
        reader = open_store(f"s3://{BUCKET}/tiered", data_dir=str(tmp_path / "b"))  # another machine
    finally:
        del os.environ["S3_ENDPOINT_URL"]
    assert isinstance(writer.transport, S3Transport) and isinstance(writer.cache, LocalStore)
    sha1 = writer.put(b"model weights")
    assert writer.cache.has(sha1)  # written through to the cache after the remote
    writer.set_ref("recipes/r1", sha1.encode())
    assert reader.cache is not None and not reader.cache.has(sha1)
    assert reader.get_ref("recipes/r1") == sha1.encode()  # refs are the remote's, never cached
    assert reader.get(sha1) == b"model weights"
    assert LocalStore(tmp_path / "b").get(sha1) == b"model weights"  # filled, verified
    # A cached copy that rotted on disk is replaced by a fresh verified one.
    reader.cache.object_path(sha1).write_bytes(b"bit rot here")  # type: ignore[attr-defined]
    assert reader.get(sha1) == b"model weights"
    assert LocalStore(tmp_path / "b").get(sha1) == b"model weights"

"""The S3 backend against a real S3 endpoint: moto in server mode on 127.0.0.1.

The store talks to it over HTTP through boto3 exactly as it would to MinIO or AWS.
moto checks a conditional write and then writes without holding a lock, so the
412 paths are tested sequentially here; concurrent races are left to real servers.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from stl_testing import FAKE_AWS, moto_s3_server  # noqa: E402

from store import BackendUnavailable, HashMismatch, LocalStore, ObjectNotFound, lease, open_store, sha1_bytes  # noqa: E402
from store.s3 import S3Store  # noqa: E402
from store.tiered import TieredStore  # noqa: E402

BUCKET = "stl-test"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3_server(BUCKET) as url, pytest.MonkeyPatch.context() as mp:
        # The store under test reads credentials from the environment; only moto's fake ones.
        for var, value in FAKE_AWS.items():
            mp.setenv(var, value)
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(var, raising=False)
        yield url


@pytest.fixture
def raw(endpoint: str) -> Any:
    """A plain boto3 client, to look at and tamper with the bucket behind the store's back."""
    return boto3.client("s3", endpoint_url=endpoint)


@pytest.fixture
def s3(endpoint: str, request: pytest.FixtureRequest) -> S3Store:
    # A fresh prefix per test keeps tests independent inside one bucket.
    return S3Store(BUCKET, f"t/{request.node.name}", endpoint_url=endpoint)


def test_put_get_has_and_key_layout(s3: S3Store, raw: Any) -> None:
    sha1 = s3.put(b"hello")
    assert sha1 == sha1_bytes(b"hello")
    assert s3.get(sha1) == b"hello"
    assert s3.has(sha1)
    assert not s3.has("0" * 40)
    key = f"{s3.prefix}/objects/{sha1[:2]}/{sha1[2:]}"
    assert raw.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hello"
    assert s3.put(b"hello") == sha1
    with pytest.raises(ObjectNotFound):
        s3.get("0" * 40)


def test_streaming_large_object_multipart(s3: S3Store, tmp_path: Path, raw: Any) -> None:
    big = os.urandom(17 * (1 << 20) + 5)  # above the 16 MiB multipart threshold
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    sha1 = s3.put_file(src)
    assert sha1 == sha1_bytes(big)
    head = raw.head_object(Bucket=BUCKET, Key=f"{s3.prefix}/objects/{sha1[:2]}/{sha1[2:]}")
    assert "-" in head["ETag"], "a large file should have gone up as a multipart upload"
    with s3.open(sha1) as f:
        assert f.read() == big
    s3.get_to_file(sha1, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == big
    with open(src, "rb") as stream:
        assert s3.put_stream(stream) == sha1
    assert b"".join(s3.iter_chunks(sha1)) == big


def test_corrupted_remote_object_is_detected(s3: S3Store, raw: Any, tmp_path: Path) -> None:
    sha1 = s3.put(b"precious bytes")
    key = f"{s3.prefix}/objects/{sha1[:2]}/{sha1[2:]}"
    raw.put_object(Bucket=BUCKET, Key=key, Body=b"tampered bytes")
    with pytest.raises(HashMismatch):
        s3.get(sha1)
    with pytest.raises(HashMismatch):
        s3.open(sha1)
    with pytest.raises(HashMismatch):
        s3.get_to_file(sha1, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # put_file re-uploads a same-named object whose size is wrong instead of trusting it
    raw.put_object(Bucket=BUCKET, Key=key, Body=b"short")
    (tmp_path / "src").write_bytes(b"precious bytes")
    assert s3.put_file(tmp_path / "src") == sha1
    assert s3.get(sha1) == b"precious bytes"


def test_refs_create_replace_list(s3: S3Store) -> None:
    assert s3.get_ref("models/a/status") is None
    assert s3.create_ref("models/a/status", b"1")
    assert not s3.create_ref("models/a/status", b"2")  # the If-None-Match: * -> 412 path
    assert s3.get_ref("models/a/status") == b"1"
    assert not s3.replace_ref("models/a/status", b"nope", b"3")
    assert s3.replace_ref("models/a/status", b"1", b"3")
    assert s3.get_ref("models/a/status") == b"3"
    s3.set_ref("models/b/status", b"x")
    s3.set_ref("other/c", b"y")
    assert s3.list_refs("models") == ["models/a/status", "models/b/status"]
    assert s3.list_refs("") == ["models/a/status", "models/b/status", "other/c"]
    s3.delete_ref("models/a/status")
    s3.delete_ref("models/a/status")  # idempotent
    assert s3.list_refs("models") == ["models/b/status"]
    assert not s3.replace_ref("models/a/status", b"3", b"4")


def test_server_refuses_stale_etag(s3: S3Store, raw: Any) -> None:
    """The If-Match path: a writer that slipped in between our GET and PUT makes the PUT fail."""
    assert s3.conditional_writes is True
    s3.set_ref("r", b"v1")
    _value, etag = s3._get_ref_with_tag("r")  # type: ignore[misc]
    raw.put_object(Bucket=BUCKET, Key=f"{s3.prefix}/refs/r", Body=b"v2")  # the other writer
    assert not s3._put_ref(f"{s3.prefix}/refs/r", b"v3", if_match=etag)
    assert s3.get_ref("r") == b"v2"


def test_lease_takeover_after_expiry(s3: S3Store) -> None:
    assert lease.acquire(s3, "jobs/x/lease", "a", ttl=-1)  # already expired: a dead holder
    assert lease.acquire(s3, "jobs/x/lease", "b", ttl=60)
    assert not lease.acquire(s3, "jobs/x/lease", "c", ttl=60)
    assert lease.renew(s3, "jobs/x/lease", "b", ttl=60)
    assert not lease.renew(s3, "jobs/x/lease", "a", ttl=60)
    lease.release(s3, "jobs/x/lease", "b")
    assert lease.acquire(s3, "jobs/x/lease", "c", ttl=60)
    assert lease.holder(s3, "jobs/x/lease").owner == "c"  # type: ignore[union-attr]
    assert not s3.list_refs("tmp"), "the conditional-write probe must leave nothing behind"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_down_endpoint_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens here
    store = S3Store(BUCKET, "p", endpoint_url=url, max_attempts=1)
    assert store.conditional_writes is None  # probe deferred, not failed
    for call in (lambda: store.get("a" * 40), lambda: store.put(b"x"), lambda: store.get_ref("r")):
        with pytest.raises(BackendUnavailable) as info:
            call()
        message = str(info.value)
        assert url in message and "unreachable" in message and "\n" not in message


def _drop_conditions(request: Any, **_: Any) -> None:
    for header in ("If-None-Match", "If-Match"):
        del request.headers[header]  # HTTPHeaders is an email.message.Message: no KeyError


def test_server_without_conditional_writes_warns(endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    """A server that ignores If-None-Match is detected by the probe and logged loudly."""
    store = S3Store(BUCKET, "nocas", endpoint_url=endpoint, probe=False)
    # Strip the condition headers before signing: the server then sees plain PUTs,
    # as an S3-compatible server that does not implement them would.
    store.client.meta.events.register("before-sign.s3.PutObject", _drop_conditions)
    with caplog.at_level(logging.WARNING, logger="store.s3"):
        assert store.probe_conditional_writes() is False
    assert "does not honour conditional writes" in caplog.text
    assert store.create_ref("l", b"1")  # best effort still refuses an existing ref it can see
    assert not store.create_ref("l", b"2")


def test_tiered_cache_fills_on_read(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    writer = open_store(f"s3://{BUCKET}/tiered", data_dir=str(tmp_path / "a"))
    assert isinstance(writer, TieredStore) and isinstance(writer.remote, S3Store)
    sha1 = writer.put(b"model weights")
    assert writer.cache.has(sha1)  # written through to the cache after the remote
    big = os.urandom(2 << 20)
    (tmp_path / "big").write_bytes(big)
    big_sha1 = writer.put_file(tmp_path / "big")
    writer.set_ref("recipes/r1", sha1.encode())

    reader = open_store(f"s3://{BUCKET}/tiered", data_dir=str(tmp_path / "b"))  # another machine
    assert not reader.cache.has(sha1)  # type: ignore[attr-defined]
    assert reader.get_ref("recipes/r1") == sha1.encode()  # refs are the remote's
    assert reader.get(sha1) == b"model weights"
    assert LocalStore(tmp_path / "b").get(sha1) == b"model weights"  # filled, verified
    with reader.open(big_sha1) as f:
        assert f.read() == big
    assert LocalStore(tmp_path / "b").has(big_sha1)


def test_tiered_write_fails_remotely_leaves_cache_empty(tmp_path: Path) -> None:
    down = S3Store(BUCKET, "p", endpoint_url=f"http://127.0.0.1:{_free_port()}", max_attempts=1)
    tiered = TieredStore(LocalStore(tmp_path), down)
    with pytest.raises(BackendUnavailable):
        tiered.put(b"not durable")
    assert not LocalStore(tmp_path).has(sha1_bytes(b"not durable"))
    (tmp_path / "src").write_bytes(b"streamed")
    with pytest.raises(BackendUnavailable), open(tmp_path / "src", "rb") as src:
        tiered.put_stream(src)
    assert not LocalStore(tmp_path).has(sha1_bytes(b"streamed"))


def test_tiered_rejects_corrupt_remote_on_fill(endpoint: str, raw: Any, tmp_path: Path) -> None:
    remote = S3Store(BUCKET, "tiered-bad", endpoint_url=endpoint)
    sha1 = remote.put(b"good")
    raw.put_object(Bucket=BUCKET, Key=f"tiered-bad/objects/{sha1[:2]}/{sha1[2:]}", Body=b"evil")
    tiered = TieredStore(LocalStore(tmp_path), remote)
    with pytest.raises(HashMismatch):
        tiered.get(sha1)
    assert not tiered.cache.has(sha1), "bad bytes must never enter the cache"

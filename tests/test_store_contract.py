"""The store contract: every backend passes the same tests.

memory and local run in-process; S3 against moto's server and IPFS against a
js-ipfs node, both real HTTP servers started for the session (tests/conftest.py);
"s3+cache" is the S3 transport behind a verified local cache, as ``s3://`` opens it.
A backend whose server cannot start fails here in CI; nothing is skipped silently.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from stl_testing import free_port
from store_backends import ALL, REMOTE, Backend, make_backend, tamper

from store import (
    BackendUnavailable,
    HashMismatch,
    InvalidHash,
    InvalidRefName,
    ObjectNotFound,
    ObjectStore,
    lease,
    sha1_bytes,
)


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    kind = request.param
    s3 = request.getfixturevalue("moto_endpoint") if kind.startswith("s3") else ""
    ipfs = request.getfixturevalue("ipfs_node").url if kind == "ipfs" else ""
    return make_backend(kind, tmp_path, s3, ipfs)


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.open()


def _in_parallel(backend: Backend, fn: Callable[..., Any], calls: list[tuple]) -> list[Any]:
    """Run ``fn`` over ``calls`` in separate processes, or threads for a per-process backend."""
    if backend.shared_across_processes:
        with mp.get_context("spawn").Pool(min(len(calls), 6)) as pool:
            return pool.starmap(fn, calls)
    with ThreadPoolExecutor(len(calls)) as threads:
        return list(threads.map(lambda args: fn(*args), calls))


# -- objects ----------------------------------------------------------------------
def test_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    sha1 = store.put(b"hello")
    assert sha1 == "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
    assert store.put(b"hello") == sha1  # idempotent
    assert store.has(sha1) and not store.has("0" * 40)
    assert store.get(sha1) == b"hello"
    with store.open(sha1) as f:
        assert f.read() == b"hello"
    store.get_to_file(sha1, tmp_path / "out" / "hello.bin")
    assert (tmp_path / "out" / "hello.bin").read_bytes() == b"hello"
    empty = store.put(b"")
    assert store.get(empty) == b""
    assert sha1 in store.list_objects() and empty in store.list_objects()
    # A peek is the object's first bytes (a hint for gc, unverified), or None when it is absent.
    assert store.peek(sha1, 3) == b"hel" and store.peek(sha1, 99) == b"hello" and store.peek(empty, 1) == b""
    assert store.peek("0" * 40, 1) is None


def test_missing_objects_and_bad_names(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("0" * 40)
    with pytest.raises(ObjectNotFound):
        store.open("0" * 40)
    for bad in ("../../etc/passwd", "A" * 40, "0" * 39, "0" * 40 + "\n"):
        with pytest.raises(InvalidHash):
            store.get(bad)
    for name in ("", "../x", "a//b", "a/../b", "/abs", "a/", "x\n"):
        with pytest.raises(InvalidRefName):
            store.set_ref(name, b"x")


def test_large_object_streams(store: ObjectStore, tmp_path: Path) -> None:
    """Above S3's 16 MiB multipart threshold and many 256 KiB IPFS chunks."""
    big = os.urandom(17 * (1 << 20) + 5)
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    sha1 = store.put_file(src)
    assert sha1 == sha1_bytes(big)
    with store.open(sha1) as f:
        assert f.read() == big
    assert b"".join(store.iter_chunks(sha1)) == big
    store.get_to_file(sha1, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == big
    with open(src, "rb") as stream:  # read once, name known only at the end
        assert store.put_stream(stream) == sha1


def test_put_stream_with_a_wrong_expected_hash_stores_nothing(store: ObjectStore) -> None:
    with pytest.raises(HashMismatch):
        store.put_stream(io.BytesIO(b"not what was promised"), expect="0" * 40)
    assert not store.has(sha1_bytes(b"not what was promised"))


def test_corruption_is_detected_on_read_and_repaired_by_put(
    backend: Backend, store: ObjectStore, tmp_path: Path
) -> None:
    sha1 = store.put(b"precious bytes")
    tamper(store, sha1, b"tampered bytes")
    reader = backend.elsewhere(tmp_path / "elsewhere").open()  # another machine: an empty cache
    for read in (reader.get, reader.open, lambda s: reader.get_to_file(s, tmp_path / "out")):
        with pytest.raises(HashMismatch) as info:
            read(sha1)
        assert info.value.expected == sha1 and info.value.actual == sha1_bytes(b"tampered bytes")
    assert not (tmp_path / "out").exists()
    if reader.cache is not None:
        assert not reader.cache.has(sha1), "bad bytes must never enter a cache"
    assert store.put(b"precious bytes") == sha1  # the right bytes replace the wrong ones
    assert reader.get(sha1) == b"precious bytes"


def _put_many(spec: Backend, data: bytes, n: int) -> str:
    store = spec.open()
    names = {store.put(data) for _ in range(n)}
    assert len(names) == 1
    return names.pop()


def test_concurrent_writers_of_the_same_object(backend: Backend) -> None:
    data = os.urandom(300_000)  # more than one IPFS chunk
    names = _in_parallel(backend, _put_many, [(backend, data, 5)] * 4)
    assert set(names) == {sha1_bytes(data)}
    assert backend.open().get(names[0]) == data


def test_stat_says_when_and_how_big_or_nothing(store: ObjectStore, backend: Backend) -> None:
    """What garbage collection relies on: an age it may trust, or None (then it keeps the object)."""
    import time

    before = time.time()
    sha1 = store.put(b"an object whose age matters")
    stat = store.stat_object(sha1)
    assert store.stat_object("f" * 40) is None
    if backend.kind == "ipfs":
        assert stat is None  # the node keeps no write time: gc never deletes there
        return
    assert stat is not None
    written, size = stat
    assert size == len(b"an object whose age matters")
    assert before - 5 <= written <= time.time() + 5  # S3's Last-Modified has whole seconds
    store.set_ref("gc/probe", b"x")
    assert store.stat_ref("gc/probe") is not None
    store.delete_object(sha1)
    assert not store.has(sha1) and store.stat_object(sha1) is None


# -- refs ---------------------------------------------------------------------------
def test_refs_create_replace_list_delete(store: ObjectStore) -> None:
    assert store.get_ref("models/a/status") is None
    assert store.create_ref("models/a/status", b"1")
    assert not store.create_ref("models/a/status", b"2")
    assert store.get_ref("models/a/status") == b"1"
    assert not store.replace_ref("models/a/status", b"nope", b"3")
    assert store.replace_ref("models/a/status", b"1", b"3")
    assert store.get_ref("models/a/status") == b"3"
    assert not store.replace_ref("models/none", b"", b"x")
    store.set_ref("models/b/status", b"x")
    store.set_ref("other/c", b"y")
    assert store.list_refs("models") == ["models/a/status", "models/b/status"]
    assert store.list_refs("") == ["models/a/status", "models/b/status", "other/c"]
    store.delete_ref("models/a/status")
    store.delete_ref("models/a/status")  # idempotent
    assert store.list_refs("models") == ["models/b/status"]
    assert not store.replace_ref("models/a/status", b"3", b"4")


def test_compare_and_swap_loses_to_a_writer_in_between(store: ObjectStore) -> None:
    """The tag read with the value must still match at write time."""
    store.set_ref("r", b"v1")
    entry = store.refs.get("refs/r")
    assert entry is not None
    tag = entry.tag
    entry.close()
    store.set_ref("r", b"v2")  # another writer
    assert not store.refs.put("refs/r", io.BytesIO(b"v3"), 2, if_tag=tag)
    assert store.get_ref("r") == b"v2"


def _race_lease(spec: Backend, owner: str) -> bool:
    return lease.acquire(spec.open(), "jobs/x/lease", owner, ttl=60)


def _race_counter(spec: Backend, rounds: int) -> int:
    """Increment a counter ref by compare-and-swap; return how many increments this worker won."""
    store = spec.open()
    won = 0
    for _ in range(rounds):
        current = store.get_ref("counter")
        if current is not None and store.replace_ref("counter", current, str(int(current) + 1).encode()):
            won += 1
    return won


def test_exactly_one_process_wins_a_lease(backend: Backend) -> None:
    backend.open()
    won = _in_parallel(backend, _race_lease, [(backend, f"w{i}") for i in range(8)])
    assert sum(won) == 1


def test_compare_and_swap_races_lose_no_update(backend: Backend) -> None:
    store = backend.open()
    store.set_ref("counter", b"0")
    won = _in_parallel(backend, _race_counter, [(backend, 15)] * 4)
    assert int(store.get_ref("counter") or b"-1") == sum(won) > 0


def test_lease_expiry_renewal_and_release(store: ObjectStore) -> None:
    assert lease.acquire(store, "l", "a", ttl=-1)  # already expired: a dead holder
    assert lease.acquire(store, "l", "b", ttl=60)
    assert not lease.acquire(store, "l", "c", ttl=60)
    assert lease.renew(store, "l", "b", ttl=60)
    assert not lease.renew(store, "l", "a", ttl=60)
    lease.release(store, "l", "b")
    assert lease.acquire(store, "l", "c", ttl=60)
    assert lease.holder(store, "l").owner == "c"  # type: ignore[union-attr]


# -- a server that is gone ------------------------------------------------------------
@pytest.mark.parametrize("kind", REMOTE)
def test_down_endpoint_is_one_clear_line_and_loses_nothing(kind: str, tmp_path: Path, fake_aws: None) -> None:
    port = free_port()  # nothing listens here
    spec = make_backend(kind, tmp_path).down(port)
    store = spec.open()
    if kind == "ipfs":  # an object recorded while the node was up (its CID index is local)
        store.link_native_id("a" * 40, "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq")
    for call in (lambda: store.put(b"not durable"), lambda: store.get("a" * 40), lambda: store.has("a" * 40)):
        with pytest.raises(BackendUnavailable) as info:
            call()
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "unreachable" in message and "\n" not in message
    if store.cache is not None:
        assert not store.cache.has(sha1_bytes(b"not durable")), "a write the remote refused stays nowhere"
    if kind.startswith("s3"):  # IPFS keeps refs on local disk; S3's are on the server
        with pytest.raises(BackendUnavailable):
            store.get_ref("r")

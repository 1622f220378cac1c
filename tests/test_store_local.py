"""The local backend: verified reads, atomic writes, refs and leases across processes."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

from store import HashMismatch, InvalidHash, InvalidRefName, LocalStore, ObjectNotFound, lease, sha1_bytes


def test_put_get_roundtrip_and_sharded_path(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    sha1 = s.put(b"hello")
    assert sha1 == sha1_bytes(b"hello")
    assert s.get(sha1) == b"hello"
    assert s.has(sha1)
    assert (tmp_path / "objects" / sha1[:2] / sha1[2:]).is_file()
    assert s.put(b"hello") == sha1  # idempotent


def test_corrupted_object_is_never_returned(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    sha1 = s.put(b"precious bytes")
    s.object_path(sha1).write_bytes(b"tampered bytes")
    with pytest.raises(HashMismatch):
        s.get(sha1)
    with pytest.raises(HashMismatch):
        s.open(sha1)
    with pytest.raises(HashMismatch):
        s.get_to_file(sha1, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_object_and_bad_names(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    with pytest.raises(ObjectNotFound):
        s.get("0" * 40)
    with pytest.raises(InvalidHash):
        s.get("../../etc/passwd")
    for bad in ("", "../x", "a//b", "a/../b", "/abs"):
        with pytest.raises(InvalidRefName):
            s.set_ref(bad, b"x")


def test_streaming_put_and_open(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    big = os.urandom(3 * (1 << 20) + 17)
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    sha1 = s.put_file(src)
    assert sha1 == sha1_bytes(big)
    with s.open(sha1) as f:
        assert f.read() == big
    assert b"".join(s.iter_chunks(sha1)) == big
    assert not list((tmp_path / "tmp").glob("obj-*")), "no staging file may be left behind"


def test_refs_create_replace_list(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    assert s.get_ref("models/a/status") is None
    assert s.create_ref("models/a/status", b"1")
    assert not s.create_ref("models/a/status", b"2")
    assert not s.replace_ref("models/a/status", b"nope", b"3")
    assert s.replace_ref("models/a/status", b"1", b"3")
    assert s.get_ref("models/a/status") == b"3"
    s.set_ref("models/b/status", b"x")
    assert s.list_refs("models") == ["models/a/status", "models/b/status"]
    s.delete_ref("models/a/status")
    assert s.list_refs("models") == ["models/b/status"]


def _put_same(root: str, data: bytes, n: int) -> str:
    s = LocalStore(root)
    for _ in range(n):
        sha1 = s.put(data)
    return sha1


def _race_lease(root: str, owner: str) -> bool:
    return lease.acquire(LocalStore(root), "jobs/x/lease", owner, ttl=60)


def test_concurrent_writers_of_same_object(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    with mp.get_context("spawn").Pool(4) as pool:
        shas = pool.starmap(_put_same, [(str(tmp_path), data, 20)] * 4)
    assert len(set(shas)) == 1
    assert LocalStore(tmp_path).get(shas[0]) == data


def test_exactly_one_process_wins_a_lease(tmp_path: Path) -> None:
    LocalStore(tmp_path)
    with mp.get_context("spawn").Pool(6) as pool:
        won = pool.starmap(_race_lease, [(str(tmp_path), f"w{i}") for i in range(12)])
    assert sum(won) == 1


def test_expired_lease_is_taken_over(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    assert lease.acquire(s, "l", "a", ttl=-1)  # already expired: a dead holder
    assert lease.acquire(s, "l", "b", ttl=60)
    assert not lease.acquire(s, "l", "c", ttl=60)
    assert lease.renew(s, "l", "b", ttl=60)
    assert not lease.renew(s, "l", "a", ttl=60)
    lease.release(s, "l", "b")
    assert lease.acquire(s, "l", "c", ttl=60)

"""What only the IPFS transport does, against js-ipfs (tests/ipfs_node.py), checked by an independent CID tool.

js-ipfs is an IPFS implementation independent of Kubo, and the CIDs it returns
are checked against ``ipfs_cid`` (PyPI), which computes a raw-leaf CIDv1 from
the bytes alone: what the README promises (CIDv1, raw leaves, sha2-256, 256 KiB
chunks, base32) is what comes out. The behaviour every backend shares is in
test_store_contract.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
from ipfs_cid import cid_sha256_hash

from store import HashMismatch, LocalStore, ObjectNotFound, ObjectStore, open_store, sha1_bytes
from store.cas import object_key
from store.ipfs import IpfsTransport, api_url
from store.local import LocalTransport

HELLO_CIDV1_RAW = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"  # b"hello world\n"
CHUNK = 262144


@pytest.fixture
def store(ipfs_node: object, tmp_path: Path) -> ObjectStore:
    node = IpfsTransport(ipfs_node.url, index=LocalTransport(tmp_path / "index"))  # type: ignore[attr-defined]
    return ObjectStore(node, refs=LocalTransport(tmp_path))


def test_api_address_forms() -> None:
    assert api_url("/ip4/127.0.0.1/tcp/5001") == "http://127.0.0.1:5001"
    assert api_url("/dns/ipfs/tcp/5001/http") == "http://ipfs:5001"
    assert api_url("/ip6/::1/tcp/5001") == "http://[::1]:5001"
    assert api_url("/dns4/node.example/tcp/443/https") == "https://node.example:443"
    assert api_url("http://localhost:5001/") == "http://localhost:5001"


def test_node_is_js_ipfs(store: ObjectStore) -> None:
    assert store.transport.version() == "0.18.1"  # type: ignore[attr-defined]  # ipfs-core of js-ipfs 0.66


def test_one_chunk_object_gets_the_raw_cidv1_an_independent_tool_computes(
    store: ObjectStore, ipfs_node: object
) -> None:
    sha1 = store.put(b"hello world\n")
    assert sha1 == sha1_bytes(b"hello world\n")
    assert cid_sha256_hash(b"hello world\n") == HELLO_CIDV1_RAW
    assert store.native_id(sha1) == HELLO_CIDV1_RAW
    # pinned on the node itself, asked without going through the store
    pins = requests.post(f"{ipfs_node.url}/api/v0/pin/ls", params={"arg": HELLO_CIDV1_RAW}, timeout=10)  # type: ignore[attr-defined]
    assert pins.status_code == 200 and len(pins.json()["Keys"]) == 1
    for size in (1, CHUNK):  # up to one chunk the object is one raw block
        data = os.urandom(size)
        assert store.native_id(store.put(data)) == cid_sha256_hash(data)


def test_multi_chunk_object_links_raw_leaves_of_256_kib(store: ObjectStore, ipfs_node: object) -> None:
    data = os.urandom(3 * CHUNK + 1000)
    sha1 = store.put(data)
    root = store.native_id(sha1)
    assert root is not None and root.startswith("bafybei")  # CIDv1, dag-pb root, sha2-256, base32
    refs = requests.post(
        f"{ipfs_node.url}/api/v0/refs",  # type: ignore[attr-defined]
        params={"arg": root, "cid-base": "base32"},
        timeout=10,
    )
    assert refs.status_code == 200, refs.text
    links = [json.loads(line)["Ref"] for line in refs.text.splitlines() if line.strip()]
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    assert links == [cid_sha256_hash(chunk) for chunk in chunks]


def test_a_wrong_cid_mapping_is_detected(store: ObjectStore, tmp_path: Path) -> None:
    a = store.put(b"the real object")
    b = store.put(b"something else")
    store.link_native_id(a, store.native_id(b))  # type: ignore[arg-type]
    for read in (store.get, store.open, lambda s: store.get_to_file(s, tmp_path / "out")):
        with pytest.raises(HashMismatch) as info:
            read(a)
        assert store.native_id(b) in str(info.value)  # the message names the CID that was read
    assert not (tmp_path / "out").exists()


def test_unknown_cid_is_not_found(store: ObjectStore) -> None:
    store.link_native_id("1" * 40, cid_sha256_hash(b"never added anywhere"))
    with pytest.raises(ObjectNotFound):
        store.get("1" * 40)
    assert not store.has("1" * 40)


def test_delete_unpins(store: ObjectStore) -> None:
    sha1 = store.put(b"short-lived")
    key = object_key(sha1)
    assert store.transport.exists(key)
    store.transport.delete(key)
    assert not store.transport.exists(key) and not store.has(sha1)


def test_open_store_keeps_refs_index_and_cache_locally(ipfs_node: object, tmp_path: Path) -> None:
    store = open_store(f"ipfs://{ipfs_node.url.removeprefix('http://')}", data_dir=str(tmp_path))  # type: ignore[attr-defined]
    assert isinstance(store.transport, IpfsTransport) and isinstance(store.cache, LocalStore)
    sha1 = store.put(b"cached and pinned")
    assert store.native_id(sha1) == cid_sha256_hash(b"cached and pinned")
    store.set_ref("jobs/x/status", b"ready")
    assert (tmp_path / "refs" / "jobs" / "x" / "status").read_bytes() == b"ready"
    cache = LocalStore(tmp_path)
    cache.object_path(sha1).unlink()  # the cache lost it; the node still has it
    assert store.get(sha1) == b"cached and pinned"
    assert cache.has(sha1)  # filled again, verified on the way in

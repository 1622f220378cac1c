"""What only the local transport does: its layout on disk and its staging directory.

The behaviour every backend shares is in test_store_contract.py.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from store import LocalStore, sha1_bytes
from store.local import LocalTransport


def test_layout_on_disk(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    sha1 = s.put(b"hello")
    assert (tmp_path / "objects" / sha1[:2] / sha1[2:]).read_bytes() == b"hello"
    assert s.object_path(sha1) == tmp_path / "objects" / sha1[:2] / sha1[2:]
    s.set_ref("models/m/status", b"ready")
    assert (tmp_path / "refs" / "models" / "m" / "status").read_bytes() == b"ready"


def test_nothing_staged_is_left_behind(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (3 << 20))
    s.put_file(src)
    s.put(b"small")
    s.put(b"small")
    assert s.create_ref("r", b"1")
    assert not s.create_ref("r", b"2")
    assert not s.replace_ref("r", b"0", b"3")
    assert s.replace_ref("r", b"1", b"3")
    assert [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("lock-")] == []


def test_tag_is_the_content_hash_computed_only_when_asked(tmp_path: Path) -> None:
    t = LocalTransport(tmp_path)
    assert t.put("refs/r", io.BytesIO(b"v1"), 2)
    entry = t.get("refs/r")
    assert entry is not None
    assert entry.tag == sha1_bytes(b"v1")
    assert entry.read() == b"v1"
    assert not t.put("refs/r", io.BytesIO(b"v2"), 2, if_tag=sha1_bytes(b"other"))
    assert t.put("refs/r", io.BytesIO(b"v2"), 2, if_tag=sha1_bytes(b"v1"))
    assert t.list("refs/") == ["refs/r"] and t.list("") == ["refs/r"]  # tmp/ is not content


def test_putting_an_object_that_is_there_renews_its_age(tmp_path: Path) -> None:
    """gc's grace period protects an object a training re-put but has not named yet."""
    store = LocalStore(tmp_path / "data")
    sha1 = store.put(b"old bytes, put again")
    path = store.object_path(sha1)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert store.stat_object(sha1) == (1_000_000_000, len(b"old bytes, put again"))
    store.put(b"old bytes, put again")
    stat = store.stat_object(sha1)
    assert stat is not None and stat[0] > 1_000_000_000 + 10 * 365 * 86400

"""What only the local transport does: its layout on disk and its staging directory.

The behaviour every backend shares is in test_store_contract.py.
"""

from __future__ import annotations

import io
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

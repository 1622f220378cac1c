"""Pure checks behind the security fixes: URL parsing, address classes, checkpoint views, hashes, repair."""

from __future__ import annotations

import collections
import io
import ipaddress
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from model.bases.torch_legacy import load_legacy_state_dict
from model.data.urls import is_public, parse_http_url
from model.errors import BaseModelError, InvalidUrl
from model.jobs import state as jobs
from store import LocalStore, ObjectNotFound
from store.hashing import is_sha1

# -- URLs and addresses --------------------------------------------------------


def test_a_url_is_taken_apart_once() -> None:
    t = parse_http_url("HTTP://Example.COM:8080/a%20b/ü.png?x=1#frag")
    assert (t.scheme, t.host, t.port, t.target) == ("http", "example.com", 8080, "/a%20b/%C3%BC.png?x=1")
    assert t.host_header == "example.com:8080"
    v6 = parse_http_url("https://[2606:4700::1111]/")
    assert (v6.host, v6.port, v6.host_header) == ("2606:4700::1111", 443, "[2606:4700::1111]")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8703\\@127.0.0.1:8701/x",
        "http://169.254.169.254\\@1.1.1.1/",
        "http://a.com\t/x",
        "http://a.com/x\x00",
        "http://user@a.com/",
        "http://a.com:99999/",
        "http://a.com:８０/",
        "http://a.com:-1/",
        "http://[::1/",
        "http://[nope]/",
        "http:///x",
        "http://exämple.com/",
    ],
)
def test_ambiguous_or_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidUrl):
        parse_http_url(url)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("1.1.1.1", True),
        ("2606:4700::1111", True),
        ("2002:0101:0101::", True),  # 6to4 around a public address
        ("64:ff9b::101:101", True),  # NAT64 around 1.1.1.1
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.100.100.200", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("192.0.0.8", False),
        ("198.18.0.1", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:0001::", False),
        ("2002:a9fe:a9fe::", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b:1::1", False),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("fe80::1", False),
        ("fc00::1", False),
        ("::", False),
    ],
)
def test_address_classes(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


# -- crafted torch checkpoints ---------------------------------------------------


@pytest.fixture
def checkpoint(monkeypatch: pytest.MonkeyPatch):
    """Build a legacy checkpoint of one float tensor over a 3-element storage, with any view."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_type = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage = storage_type

    def _rebuild_tensor_v2(*args: object) -> None: ...

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    marker = object()

    class Tensor:
        def __init__(self, offset: int, size: tuple, stride: tuple) -> None:
            self.args = (marker, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self) -> tuple:
            return (_rebuild_tensor_v2, self.args)

    def build(offset: int, size: tuple, stride: tuple) -> bytes:
        out = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, out, protocol=2)
        pickler = pickle.Pickler(out, protocol=2)
        pickler.persistent_id = lambda obj: (
            ("storage", storage_type, "0", "cpu", 3) if obj is marker else None
        )
        pickler.dump(collections.OrderedDict(w=Tensor(offset, size, stride)))
        pickle.dump(["0"], out, protocol=2)
        out.write(struct.pack("<q", 3) + np.array([1, 2, 3], "<f4").tobytes())
        return out.getvalue()

    return build


def test_a_well_formed_view_loads(checkpoint) -> None:
    assert load_legacy_state_dict(checkpoint(0, (3,), (1,)))["w"].tolist() == [1.0, 2.0, 3.0]
    assert load_legacy_state_dict(checkpoint(1, (2,), (1,)))["w"].tolist() == [2.0, 3.0]


@pytest.mark.parametrize(
    ("offset", "size", "stride", "message"),
    [
        (0, (256,), (1,), "a tensor of shape (256,) over a storage of 3"),  # read heap garbage before
        (0, (3,), (2,), "reaches element 4 of a storage of 3"),
        (3, (1,), (1,), "reaches element 3 of a storage of 3"),
        (99, (1,), (1,), "reaches element 99"),
        (0, (2,), (-1,), "negative offset, size or stride"),
        (-1, (1,), (1,), "negative offset, size or stride"),
        (0, (2**40, 2**40), (0, 0), "over a storage of 3"),
        (0, (3,), (1, 1), "malformed shape or stride"),
    ],
)
def test_views_outside_their_storage_are_refused(checkpoint, offset, size, stride, message) -> None:
    with pytest.raises(
        BaseModelError,
        match=r"^corrupt torch checkpoint: .*" + message.replace("(", r"\(").replace(")", r"\)"),
    ):
        load_legacy_state_dict(checkpoint(offset, size, stride))


# -- hashes, repair, job messages -------------------------------------------------


def test_a_sha1_with_a_trailing_newline_is_not_a_sha1() -> None:
    assert is_sha1("a" * 40)
    assert not is_sha1("a" * 40 + "\n")


def test_put_repairs_a_corrupt_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    sha1 = store.put(b"the right bytes")
    store.object_path(sha1).write_bytes(b"the wrong bytes")
    assert store.put(b"the right bytes") == sha1
    assert store.get(sha1) == b"the right bytes"


def test_a_job_error_names_no_store_path(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "secret-location")

    def train(progress: object) -> dict:
        raise ObjectNotFound("c" * 40, store.location)

    with pytest.raises(ObjectNotFound):
        jobs.run_with_lease(store, "d" * 40, "me", 10, train)
    record = jobs.read_status(store, "d" * 40)
    assert record is not None and record["status"] == "error" and record["error_kind"] == "transient"
    assert "secret-location" not in record["message"]
    assert record["message"] == "store error (ObjectNotFound); see the server log"


def test_only_local_paths_are_redirect_targets() -> None:
    from handlers.web_guard import safe_redirect_target

    for local in ("/", "/ui/models?page=2", "/ui/models/ab#x"):
        assert safe_redirect_target(local) == local
    for foreign in (
        None,
        "",
        "https://evil.example/",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "ui/models",
        "/ui\n/x",
        "/ui\x7f",
    ):
        assert safe_redirect_target(foreign, "/home") == "/home", foreign


def test_host_names_are_compared_without_ports_and_case() -> None:
    from handlers.web_guard import host_allowed

    allowed = ("localhost", "127.0.0.1", "::1", "api.example")
    for host in ("localhost", "LOCALHOST:8080", "127.0.0.1:1", "[::1]:8080", "[::1]", "api.example:443"):
        assert host_allowed(host, allowed), host
    for host in ("attacker.example", "attacker.example:8080", "127.0.0.2", "[::2]:80", "localhost.evil"):
        assert not host_allowed(host, allowed), host
    assert host_allowed("anything:1", ("*",))


def test_sign_in_throttle_locks_an_address_for_its_window_and_forgets_the_oldest() -> None:
    from handlers.web_guard import SignInThrottle

    now = [1000.0]
    throttle = SignInThrottle(max_failures=3, window_s=60.0, max_addresses=2, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.failed("a")
        now[0] += 1
    assert throttle.retry_after("a") == 57  # at 1003: the first failure leaves the window at 1060
    assert throttle.retry_after("b") is None  # per address
    now[0] = 1060.5
    assert throttle.retry_after("a") is None
    throttle.failed("b")
    throttle.failed("c")
    throttle.failed("d")  # only two addresses are remembered
    assert len(throttle._failures) == 2
    throttle.succeeded("d")
    assert "d" not in throttle._failures

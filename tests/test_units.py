"""Pure pieces: CSV parsing, split, tensor format, image decoding, fetch policy, unpickler."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from model.bases.torch_legacy import UnsafePickle, load_legacy_state_dict
from model.data.csvfile import ImageRow, Row, complete, parse_csv, parse_image_list
from model.data.fetch import FetchPolicy, check_url_allowed, resolve_source
from model.data.images import decode_image
from model.data.split import split_rows
from model.errors import CsvError, FetchRefused, ImageError
from model.identity.tensors import dump_tensors, load_tensors

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_csv_parsing_and_errors() -> None:
    rows = parse_csv(f"a.png,cat,{SHA}\n\nb.png,dog,{SHA.upper()}\n".encode(), 10)
    assert [(r.line, r.label) for r in rows] == [(1, "cat"), (3, "dog")]
    assert rows[1].sha1 == SHA
    with pytest.raises(CsvError, match="CSV line 2: expected 3 fields"):
        parse_csv(f"a.png,cat,{SHA}\nb.png,dog\n".encode(), 10)
    with pytest.raises(CsvError, match="CSV line 1: 'xyz' is not a sha1"):
        parse_csv(b"a.png,cat,xyz\n", 10)
    with pytest.raises(CsvError, match="at least 2 labels"):
        parse_csv(f"a.png,cat,{SHA}\nb.png,cat,{SHA}\n".encode(), 10)
    with pytest.raises(CsvError, match="more than 1 rows"):
        parse_csv(f"a.png,cat,{SHA}\nb.png,dog,{SHA}\n".encode(), 1)
    with pytest.raises(CsvError, match="not UTF-8"):
        parse_csv(b"\xff\xfe\x00", 10)


def _rows(n_per_label: int) -> list[Row]:
    return [
        Row(i * 2 + j + 1, f"{lab}{i}.png", lab, f"{i:02d}{j}".ljust(40, "0"))
        for i in range(n_per_label)
        for j, lab in enumerate(("a", "b"))
    ]


def test_split_is_seeded_stable_and_order_free() -> None:
    rows = _rows(10)
    train, val = split_rows(rows, 1, 80, 0)
    assert len(train) == 16 and len(val) == 4
    assert set(split_rows(list(reversed(rows)), 1, 80, 0)[1]) == set(val)
    assert set(split_rows(rows, 2, 80, 0)[1]) != set(val)
    limited_train, limited_val = split_rows(rows, 1, 50, 4)
    assert len(limited_train) == 4 and len(limited_val) == 4


def test_label_with_one_image_cannot_split() -> None:
    rows = [*_rows(3), Row(99, "z.png", "c", SHA)]
    with pytest.raises(CsvError, match="label 'c' has 1 image"):
        split_rows(rows, 1, 80, 0)


def test_tensor_format_is_byte_stable_and_safetensors_compatible() -> None:
    from safetensors.numpy import load as st_load

    t = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.zeros(3, np.uint8)}
    blob = dump_tensors(t)
    assert blob == dump_tensors(dict(reversed(list(t.items()))))
    for loaded in (load_tensors(blob), st_load(blob)):
        assert np.array_equal(loaded["b"], t["b"]) and loaded["a"].dtype == np.uint8


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, "PNG")
    return buf.getvalue()


def test_decode_image_is_deterministic_and_sized() -> None:
    data = _png((40, 30))
    a = decode_image(data, 32, 10**6)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, decode_image(data, 32, 10**6))
    assert decode_image(_png((8, 8), "RGBA"), 16, 10**6).shape == (16, 16, 3)


def test_decode_image_errors() -> None:
    with pytest.raises(ImageError, match="x is not a decodable image"):
        decode_image(b"hello, I am text", 32, 10**6, "x")
    with pytest.raises(ImageError, match="x is a truncated image"):
        decode_image(_png((64, 64))[:60], 32, 10**6, "x")
    with pytest.raises(ImageError, match="x is 200x100 pixels, over the limit of 10000"):
        decode_image(_png((200, 100)), 32, 10_000, "x")


def test_resolve_source_relative_to_csv() -> None:
    assert resolve_source("img/a.png", "http://h/data/train.csv") == "http://h/data/img/a.png"
    assert resolve_source("img/a.png", "/d/train.csv") == "/d/img/a.png"
    assert resolve_source("sha1:" + SHA, "/d/train.csv") == "sha1:" + SHA
    assert resolve_source("http://x/y.png", "/d/t.csv") == "http://x/y.png"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://169.254.169.254/latest",
        "http://10.1.2.3/",
        "http://[::1]/",
    ],
)
def test_strict_policy_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(FetchRefused, match="refusing to fetch"):
        check_url_allowed(url, FetchPolicy(allow_private=False))


def test_allow_hosts_opts_back_in() -> None:
    check_url_allowed(
        "http://127.0.0.1:9000/x", FetchPolicy(allow_private=False, allow_hosts=("127.0.0.0/8",))
    )
    check_url_allowed(
        "http://localhost:9000/x", FetchPolicy(allow_private=False, allow_hosts=("localhost:9000",))
    )
    with pytest.raises(FetchRefused):
        check_url_allowed(
            "http://localhost:9001/x", FetchPolicy(allow_private=False, allow_hosts=("localhost:9000",))
        )
    with pytest.raises(FetchRefused, match="only http"):
        check_url_allowed("ftp://example.com/x", FetchPolicy())


class _Evil:
    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo pwned > /tmp/stl-pwned",))


def test_restricted_unpickler_refuses_a_malicious_pickle(tmp_path) -> None:
    # A legacy header followed by a pickle that would run os.system if trusted.
    blob = b"".join(
        pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )
    blob += pickle.dumps(_Evil(), protocol=2)
    with pytest.raises(UnsafePickle, match=r"refusing to unpickle global (posix|os)\.system"):
        load_legacy_state_dict(blob)


def test_legacy_loader_reads_a_minimal_state_dict() -> None:
    # Hand-built legacy checkpoint: one float tensor of 3 elements.
    class Storage:  # pickled as torch.FloatStorage by name
        pass

    body = (
        b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02"
        b"ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05"
        b"X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x03Ntq\x08QK\x00K\x03\x85q\tK\x01\x85q\n\x89"
        b"ccollections\nOrderedDict\nq\x0b)Rq\x0ctq\rRq\x0es."
    )
    head = b"".join(
        pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )
    tail = pickle.dumps(["0"], protocol=2) + struct.pack("<q", 3) + np.array([1, 2, 3], "<f4").tobytes()
    out = load_legacy_state_dict(head + body + tail)
    assert out["w"].tolist() == [1.0, 2.0, 3.0]


def test_fetch_refuses_other_schemes_and_reports_unreadable_paths(tmp_path) -> None:
    from model.data.fetch import fetch_bytes
    from model.errors import FetchError

    with pytest.raises(FetchRefused, match="only http"):
        fetch_bytes("ftp://example.com/a.png", FetchPolicy())
    with pytest.raises(FetchError, match="cannot read"):
        fetch_bytes(str(tmp_path / ("x" * 300)), FetchPolicy())
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(FetchError, match="cannot read"):
        fetch_bytes(str(tmp_path / "f" / "g"), FetchPolicy())


def _error_types() -> list[type[BaseException]]:
    import inspect

    import model.errors
    import store.errors

    return [
        t
        for module in (store.errors, model.errors)
        for _name, t in inspect.getmembers(module, inspect.isclass)
        if issubclass(t, BaseException) and t.__module__ == module.__name__
    ]


@pytest.mark.parametrize("error_type", _error_types(), ids=lambda t: t.__name__)
def test_every_error_survives_pickling_with_its_message(error_type: type[BaseException]) -> None:
    """Ray hands a worker's error to the driver pickled: a type whose ``__init__`` takes other
    arguments than its message must still come back as itself, or the user gets Ray's
    'failed to deserialize' instead of the one line naming the fault."""
    import inspect

    params = list(inspect.signature(error_type.__init__).parameters.values())[1:]
    explicit = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    args = [7 if p.annotation in (int, "int") else f"{p.name}-{SHA}" for p in explicit] or ["what was wrong"]
    error = error_type(*args)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is error_type and str(back) == str(error)


def test_a_header_row_names_the_columns_in_any_order() -> None:
    a, b = "a" * 40, "b" * 40
    plain = parse_csv(f"x.png,cat,{a}\ny.png,dog,{b}\n".encode(), 10)
    named = parse_csv(f"label,path,sha1\ncat,x.png,{a}\ndog,y.png,{b.upper()}\n".encode(), 10)
    assert [(r.source, r.label, r.sha1) for r in named] == [(r.source, r.label, r.sha1) for r in plain]
    assert [r.line for r in named] == [2, 3]  # the file's own line numbers
    with pytest.raises(CsvError, match=r"^CSV line 2: no sha1 for x.png \(an image URL needs one; a local"):
        parse_csv(b"path,label\nx.png,cat\ny.png,dog\n", 10)
    with pytest.raises(CsvError, match=r"^CSV line 3: expected 3 fields label,path,sha1, got 2$"):
        parse_csv(f"label,path,sha1\ncat,x.png,{a}\ndog,y.png\n".encode(), 10)
    # A first row that only looks like names is data: "path" twice is no header.
    with pytest.raises(CsvError, match="CSV line 1: 'sha1' is not a sha1"):
        parse_csv(f"path,path,sha1\nx.png,cat,{a}\n".encode(), 10)
    listed = list(parse_image_list(f"path,label,sha1\nx.png,cat,{a}\ny.png,,{b}\n".encode(), 10))
    assert listed == [ImageRow(2, "x.png", "cat", a), ImageRow(3, "y.png", None, b)]


def test_complete_fills_in_only_the_missing_sha1s_and_keeps_the_rest() -> None:
    seen = []

    def sha1_of(line: int, image: str) -> str:
        seen.append((line, image))
        return image[0] * 40

    assert complete(b"a.png,cat," + b"f" * 40 + b"\n", sha1_of, 10) == b"a.png,cat," + b"f" * 40 + b"\n"
    assert seen == []
    plain = complete(b"a.png,cat\n\nb.png,dog," + b"e" * 40 + b"\nc.png,dog\n", sha1_of, 10)
    assert (
        plain
        == b"a.png,cat," + b"a" * 40 + b"\n\nb.png,dog," + b"e" * 40 + b"\nc.png,dog," + b"c" * 40 + b"\n"
    )
    assert seen == [(1, "a.png"), (4, "c.png")]
    named = complete(b"label,path\r\ncat,d.png\r\n", sha1_of, 10)
    assert named == b"label,path,sha1\ncat,d.png," + b"d" * 40 + b"\n"
    assert [r.sha1 for r in parse_csv(named + b"dog,e.png," + b"e" * 40 + b"\n", 10)] == ["d" * 40, "e" * 40]


def test_a_csv_past_the_row_limit_is_refused_at_its_first_row_past_it_never_decoded_whole() -> None:
    """Issue 44, defect 5: 48 MB of rows by csv.url were decoded and parsed whole (the worker 500 MB
    larger) before the limit said no. Both paths stop at the row after the limit now: the url's
    (``complete``, before storing) and the sha1's (``parse_csv`` of what is stored). Bytes that
    are not UTF-8 past the limit are never reached, and memory stays at the reader's buffer."""
    import tracemalloc

    row = b"photos/a-long-enough-name.png,cat," + b"f" * 40 + b"\n"
    data = b"path,label,sha1\n" + row * 200_000 + b"\xff\xfe not UTF-8\n"
    assert len(data) > 15_000_000
    message = r"^CSV has more than 10 rows \(MAX_CSV_ROWS\)$"
    for parse in (lambda: parse_csv(data, 10), lambda: complete(data, lambda n, image: "a" * 40, 10)):
        tracemalloc.start()
        try:
            with pytest.raises(CsvError, match=message):
                parse()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, peak
    other = row.replace(b",cat,", b",dog,")
    assert len(parse_csv(row * 5 + other * 5, 10)) == 10  # the limit itself is allowed
    assert complete(b"a.png,cat\n" * 10, lambda n, image: "a" * 40, 10).count(b"\n") == 10
    with pytest.raises(CsvError, match=r"^CSV is not UTF-8 text$"):
        parse_csv(row * 3 + b"\xff\n", 10)


def test_decoding_turns_a_photo_as_its_exif_says_and_lays_alpha_onto_black() -> None:
    """In place, without the copies a 40-megapixel photo cannot afford: the same pixels as by hand."""
    from pathlib import Path

    from model.data.images import decode_squares

    rocket = Image.open(Path(__file__).parent / "data" / "rocket.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise when taken
    out = io.BytesIO()
    rocket.save(out, "JPEG", quality=90, exif=exif)
    by_hand = Image.open(io.BytesIO(out.getvalue())).transpose(Image.Transpose.ROTATE_270).convert("RGB")
    want = np.asarray(by_hand.resize((50, 50), Image.Resampling.BICUBIC, reducing_gap=None))
    assert np.array_equal(decode_image(out.getvalue(), 50, 10**8), want)
    # RGBA: transparent pixels are black, opaque ones keep their colour; both sizes from one decode.
    rgba = Image.new("RGBA", (40, 40), (200, 100, 50, 0))
    rgba.paste((10, 20, 30, 255), (0, 0, 20, 40))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    small, large = decode_squares(out.getvalue(), (40, 20), 10**8)
    assert small[5, 5].tolist() == [10, 20, 30] and small[5, 35].tolist() == [0, 0, 0]
    assert large.shape == (20, 20, 3) and np.array_equal(large, decode_image(out.getvalue(), 20, 10**8))

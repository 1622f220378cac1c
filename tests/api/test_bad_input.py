"""Every kind of bad input is a 4xx with a JSON message naming the problem, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from api_testing import Api, Site, error_of, train_body

SHA1 = "a" * 40


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ('{"csv": {"url": "x"}', "malformed JSON: Expecting ',' delimiter at line 1 column 21"),
        ("", "request body is empty; expected a JSON object"),
        ('{"csv": {"url": NaN}}', "malformed JSON: NaN is not valid JSON"),
        (b"\xff\xfe{}", "malformed JSON: the body is not UTF-8"),
        ("[]", "request body must be an object, got array"),
        ("42", "request body must be an object, got integer"),
    ],
)
def test_malformed_json(api: Api, data: str | bytes, message: str) -> None:
    r = api.post("/train", data=data, headers={"Content-Type": "application/json"})
    assert error_of(r, 400) == message


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        ("/train", '{"csv": {"url": "\\ud800"}}', "csv.url"),
        ("/train", '{"csv": {"url": "http://x/\\ud800"}}', "csv.url"),
        ("/train", '{"csv": {"sha1": "SHA1"}, "model": {"uri": "s3://b/\\udfff"}}', "model.uri"),
        ("/infer", '{"model": {"sha1": "SHA1"}, "image": {"url": "\\ud800x"}}', "image.url"),
        (
            "/infer",
            '{"model": {"sha1": "SHA1"}, "images": [{"url": "a"}, {"url": "\\ud800"}]}',
            "images[1].url",
        ),
        ("/train", '{"csv": {"url": "x"}, "metadata": {"base": "lite\\ud83d"}}', "metadata.base"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_its_field(api: Api, path: str, data: str, field: str) -> None:
    """JSON may escape half a character; no URL, path or name can hold one (it was a 500)."""
    r = api.post(path, data=data.replace("SHA1", SHA1), headers={"Content-Type": "application/json"})
    assert error_of(r, 400) == f"{field} is not valid Unicode text (a lone surrogate escape)"


@pytest.mark.parametrize("path", ["/train", "/infer"])
def test_wrong_content_type(api: Api, path: str) -> None:
    r = api.post(path, data="csv=1", headers={"Content-Type": "text/plain"})
    assert "expected Content-Type application/json" in error_of(r, 415)
    assert "got text/plain" in error_of(r, 415)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "request body needs exactly one of: csv, zip, folder"),
        ({"csv": {"url": "x.csv"}, "extra": 1}, "unknown field: extra"),
        (
            {"csv": {"url": "x.csv"}, "metadata": {"epoch": 5}},
            "unknown field: metadata.epoch",
        ),
        (
            {"csv": {"url": "x.csv"}, "metadata": {"epochs": "5"}},
            "metadata.epochs must be an integer, got string",
        ),
        (
            {"csv": {"url": "x.csv"}, "metadata": {"epochs": 0}},
            "metadata.epochs must be >= 1, got 0",
        ),
        (
            {"csv": {"url": "x.csv"}, "metadata": {"learning_rate": 11}},
            "metadata.learning_rate must be <= 10, got 11",
        ),
        (
            {"csv": {"url": "x.csv"}, "metadata": {"flip": "yes"}},
            "metadata.flip must be a boolean, got string",
        ),
        (
            {"csv": {"url": "x.csv", "sha1": "abc"}},
            "csv.sha1 must be a sha1 (40 lowercase hex digits), got 'abc'",
        ),
        ({"csv": {"url": ""}}, "csv.url must not be empty"),
        ({"csv": "x.csv"}, "csv must be an object, got string"),
        ({"csv": {"url": "x.csv"}, "model": {"uri": 1}}, "model.uri must be a string, got integer"),
        (
            # Several problems are all named, in field order.
            {"csv": {"sha1": "abc"}, "metadata": {"epochs": "5", "epoc": 1}, "x": 1},
            "unknown field: x; csv.sha1 must be a sha1 (40 lowercase hex digits), got 'abc'; "
            "unknown field: metadata.epoc; metadata.epochs must be an integer, got string",
        ),
        # Past the schema, the pipeline's own checks, with its messages.
        ({"csv": {}}, "csv needs at least one of: url, sha1"),
        ({"csv": {"sha1": SHA1}}, f"CSV {SHA1} is not in the store; give its csv.url"),
    ],
)
def test_train_body_fields(api: Api, body: dict[str, Any], message: str) -> None:
    assert error_of(api.post("/train", json=body), 400) == message


def test_train_out_of_range_after_schema(api: Api, site: Site) -> None:
    # image_size 0 means "native"; 1..31 passes the schema but not the recipe's bounds.
    r = api.post("/train", json=train_body(site, image_size=16))
    assert error_of(r, 400) == "image_size must be between 32 and 1024, got 16"


def test_an_option_the_head_does_not_read_is_a_400_and_records_nothing(api: Api, site: Site) -> None:
    before = api.get("/models").json()["models"]
    r = api.post("/train", json=train_body(site, epochs=3))
    assert error_of(r, 400) == (
        "epochs applies to head adam only; the logistic head trains to convergence "
        "(drop it, or ask for head adam)"
    )
    assert api.get("/models").json()["models"] == before


def test_unknown_base(api: Api, site: Site) -> None:
    r = api.post("/train", json=train_body(site, base="resnet-9000"))
    assert error_of(r, 400).startswith("unknown base 'resnet-9000'; choose one of: ")


@pytest.mark.parametrize(
    ("csv", "status", "message"),
    [
        (
            "bad.csv",
            422,
            "CSV line 1: no sha1 for images/dots/000.png (an image URL needs one; a local file's is computed)",
        ),
        ("one_label.csv", 422, "CSV needs at least 2 labels to train a classifier, got 1"),
    ],
)
def test_unusable_csv(api: Api, site: Site, csv: str, status: int, message: str) -> None:
    r = api.post("/train", json=train_body(site, csv))
    assert error_of(r, status) == message


def test_csv_sha1_mismatch(api: Api, site: Site) -> None:
    body = train_body(site)
    body["csv"]["sha1"] = "b" * 40
    message = error_of(api.post("/train", json=body), 422)
    assert message == (f"sha1 mismatch for {site.url}/train.csv: expected {'b' * 40}, got {site.csv_sha1()}")


def test_csv_unreachable(api: Api, site: Site) -> None:
    body = {"csv": {"url": f"{site.url}/missing.csv"}}
    assert error_of(api.post("/train", json=body), 422) == f"HTTP 404 fetching {site.url}/missing.csv"


def test_csv_too_large(api: Api, site: Site) -> None:
    body = {"csv": {"url": f"{site.url}/big.bin"}}
    message = error_of(api.post("/train", json=body), 422)
    assert message == f"{site.url}/big.bin is 1000001 bytes, over the limit of 1000000"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"image": {"url": "x.png"}}, 400, "missing field: model"),
        ({"model": {}, "image": {"url": "x.png"}}, 400, "missing field: model.sha1"),
        ({"model": {"sha1": SHA1}}, 400, "request body needs exactly one of: image, images"),
        (
            {"model": {"sha1": SHA1}, "image": {"url": "a.png"}, "images": [{"url": "b.png"}]},
            400,
            "request body needs exactly one of: image, images",
        ),
        ({"model": {"sha1": SHA1}, "images": []}, 400, "images must not be empty"),
        (
            {"model": {"sha1": SHA1}, "images": [{"url": "a.png"}] * 65},
            400,
            "images has 65 items, at most 64 are allowed",
        ),
        (
            {"model": {"sha1": SHA1}, "image": {"path": "a.png"}},
            400,
            "unknown field: image.path",
        ),
        (
            {"model": {"sha1": SHA1}, "images": [{"url": "a.png"}, {"sha1": 5}]},
            400,
            "images[1].sha1 must be a string, got integer",
        ),
        ({"model": {"sha1": SHA1}, "image": {"url": "a.png"}}, 404, f"unknown model {SHA1}"),
    ],
)
def test_infer_body_fields(api: Api, body: dict[str, Any], status: int, message: str) -> None:
    assert error_of(api.post("/infer", json=body), status) == message


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/models/xyz", 400, "model_sha1 must be a sha1 (40 lowercase hex digits), got 'xyz'"),
        (f"/models/{SHA1}", 404, f"unknown model {SHA1}"),
        ("/objects/../../etc/passwd", 404, None),
        ("/objects/ABC", 400, "sha1 must be a sha1 (40 lowercase hex digits), got 'ABC'"),
        (f"/objects/{SHA1}", 404, f"object {SHA1} not found"),
        ("/models?limit=0", 400, "limit must be an integer from 1 to 1000, got '0'"),
        ("/models?limit=x", 400, "limit must be an integer from 1 to 1000, got 'x'"),
        ("/models?limt=5", 400, "unknown query parameter: limt"),
        ("/healthz?verbose=1", 400, "unknown query parameter: verbose"),
        ("/no/such/path", 404, None),
    ],
)
def test_bad_paths(api: Api, path: str, status: int, message: str | None) -> None:
    got = error_of(api.get(path), status)
    if message is not None:
        assert got == message


def test_wrong_method(api: Api) -> None:
    r = api.get("/train")
    assert error_of(r, 405).startswith("Method Not Allowed")


@pytest.mark.parametrize(
    ("path", "reason"),
    [("train.csv/inside", "Not a directory"), ("x" * 300, "File name too long"), ("images", None)],
)
def test_unreadable_paths(api: Api, site: Site, path: str, reason: str | None) -> None:
    message = error_of(api.post("/train", json={"csv": {"url": path}}), 422)
    if reason is None:
        assert message == f"is a directory, not a file: {site.root}/{path}"
    else:
        assert message == f"cannot read {site.root}/{path}: {reason}"

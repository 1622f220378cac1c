"""POST /infer: by URL, by stored sha1, in batches, and as an upload; and what it refuses."""

from __future__ import annotations

import hashlib

import pytest
from api_testing import LABELS, MAX_DOWNLOAD_BYTES, Api, Site, error_of


def top(probabilities: dict[str, float]) -> str:
    return max(probabilities, key=lambda k: probabilities[k])


def image_sha1(site: Site, label: str) -> str:
    return hashlib.sha1((site.root / "infer" / f"{label}.png").read_bytes()).hexdigest()


def test_batch_by_url_and_sha1(api: Api, site: Site, trained_model: str) -> None:
    # A training image is in the store under its sha1; the held-out ones come by URL.
    stored_row = (site.root / "train.csv").read_text().splitlines()[0].split(",")
    images = [{"url": f"{site.url}/infer/{label}.png"} for label in LABELS]
    images.append({"sha1": stored_row[2]})
    r = api.post("/infer", json={"model": {"sha1": trained_model}, "images": images})
    assert r.status_code == 200, r.text
    result = r.json()
    assert isinstance(result, list)
    assert [top(p) for p in result] == [*LABELS, stored_row[1]]


def test_batch_matches_single(api: Api, site: Site, trained_model: str) -> None:
    url = f"{site.url}/infer/dots.png"
    single = api.post("/infer", json={"model": {"sha1": trained_model}, "image": {"url": url}}).json()
    batch = api.post("/infer", json={"model": {"sha1": trained_model}, "images": [{"url": url}]}).json()
    assert batch == [single]


def test_url_with_its_sha1(api: Api, site: Site, trained_model: str) -> None:
    image = {"url": f"{site.url}/infer/checks.png", "sha1": image_sha1(site, "checks")}
    r = api.post("/infer", json={"model": {"sha1": trained_model}, "image": image})
    assert r.status_code == 200, r.text
    assert top(r.json()) == "checks"


def test_url_with_wrong_sha1(api: Api, site: Site, trained_model: str) -> None:
    url = f"{site.url}/infer/checks.png"
    image = {"url": url, "sha1": "c" * 40}
    message = error_of(api.post("/infer", json={"model": {"sha1": trained_model}, "image": image}), 422)
    assert message == f"sha1 mismatch for {url}: expected {'c' * 40}, got {image_sha1(site, 'checks')}"


def test_unknown_image_sha1(api: Api, trained_model: str) -> None:
    r = api.post("/infer", json={"model": {"sha1": trained_model}, "image": {"sha1": "d" * 40}})
    assert error_of(r, 404) == f"object {'d' * 40} not found"


def test_image_needs_url_or_sha1(api: Api, trained_model: str) -> None:
    r = api.post("/infer", json={"model": {"sha1": trained_model}, "image": {}})
    assert error_of(r, 400) == "image needs at least one of: url, uri, sha1"


def test_not_an_image_url(api: Api, site: Site, trained_model: str) -> None:
    r = api.post(
        "/infer", json={"model": {"sha1": trained_model}, "image": {"url": f"{site.url}/not_image.png"}}
    )
    assert error_of(r, 422) == "image is not a decodable image"


def test_image_url_refused(api: Api, trained_model: str) -> None:
    url = "http://169.254.169.254/latest/meta-data/"
    r = api.post("/infer", json={"model": {"sha1": trained_model}, "image": {"url": url}})
    assert (
        error_of(r, 403)
        == f"refusing to fetch {url}: 169.254.169.254 resolves to non-public address 169.254.169.254, "
        "and FETCH_ALLOW_HOSTS does not list 169.254.169.254:80"
    )


def test_upload(api: Api, site: Site, trained_model: str) -> None:
    data = (site.root / "infer" / "stripes.png").read_bytes()
    r = api.post(
        "/infer", data={"model_sha1": trained_model}, files={"image": ("stripes.png", data, "image/png")}
    )
    assert r.status_code == 200, r.text
    assert top(r.json()) == "stripes"


def test_upload_many(api: Api, site: Site, trained_model: str) -> None:
    files = [
        ("images", (f"{label}.png", (site.root / "infer" / f"{label}.png").read_bytes())) for label in LABELS
    ]
    r = api.post("/infer", data={"model_sha1": trained_model}, files=files)
    assert r.status_code == 200, r.text
    assert [top(p) for p in r.json()] == list(LABELS)


def test_upload_not_an_image(api: Api, trained_model: str) -> None:
    r = api.post(
        "/infer", data={"model_sha1": trained_model}, files={"image": ("notes.txt", b"hello, world")}
    )
    assert error_of(r, 422) == "notes.txt is not a decodable image"


def test_upload_too_large(api: Api, trained_model: str) -> None:
    big = b"\x89PNG" + b"\0" * (MAX_DOWNLOAD_BYTES + 100 * 1024)
    r = api.post("/infer", data={"model_sha1": trained_model}, files={"image": ("big.png", big)})
    assert error_of(r, 413) == "request body is larger than the limit (MAX_DOWNLOAD_BYTES)"


def test_upload_just_over_the_image_limit(api: Api, trained_model: str) -> None:
    # Within the request slack for multipart framing, but over the per-image limit.
    big = b"\0" * (MAX_DOWNLOAD_BYTES + 1)
    r = api.post("/infer", data={"model_sha1": trained_model}, files={"image": ("big.png", big)})
    assert (
        error_of(r, 413)
        == f"big.png is larger than the limit of {MAX_DOWNLOAD_BYTES} bytes (MAX_DOWNLOAD_BYTES)"
    )


SHA1 = "e" * 40
FILE = ("a.png", b"x")


@pytest.mark.parametrize(
    ("parts", "status", "message"),
    [
        # (None, value) is a plain form field, (filename, bytes) a file: all sent as multipart.
        ([("image", FILE)], 400, "missing field: model_sha1"),
        (
            [("model_sha1", (None, "xyz")), ("image", FILE)],
            400,
            "model_sha1 must be a sha1 (40 lowercase hex digits), got 'xyz'",
        ),
        ([("model_sha1", (None, SHA1))], 400, "request body needs exactly one of: image, images"),
        (
            [("model_sha1", (None, SHA1)), ("image", FILE), ("images", FILE)],
            400,
            "request body needs exactly one of: image, images",
        ),
        (
            [("model_sha1", (None, SHA1)), ("image", FILE), ("image", FILE)],
            400,
            "image takes one file; send several as images",
        ),
        (
            [("model_sha1", (None, SHA1)), ("colour", (None, "red")), ("image", FILE)],
            400,
            "unknown field: colour",
        ),
        ([("model_sha1", (None, SHA1)), ("picture", FILE)], 400, "unknown field: picture"),
        (
            [("model_sha1", (None, SHA1)), *[("images", FILE)] * 65],
            400,
            "images has 65 items, at most 64 are allowed",
        ),
        ([("model_sha1", (None, SHA1)), ("image", FILE)], 404, f"unknown model {SHA1}"),
    ],
)
def test_upload_fields(api: Api, parts: list, status: int, message: str) -> None:
    assert error_of(api.post("/infer", files=parts), status) == message


def test_upload_empty_file(api: Api, trained_model: str) -> None:
    r = api.post("/infer", files=[("model_sha1", (None, trained_model)), ("image", ("empty.png", b""))])
    assert error_of(r, 422) == "empty.png is empty"
